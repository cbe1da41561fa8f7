// Scalar reference (the oracle) of Muon's elementwise passes: plain loops,
// compiled with -ffp-contract=off. Where torch fuses a multiply-add (lerp,
// add with alpha) the formula says std::fma; everything else is a multiply
// then an add, exactly as written in muon_prodigy.hpp. bfloat16 rounding is
// to nearest even (NaN stays NaN), the rule of torch's float -> bfloat16.
#include <cmath>

#include "slimgrad/muon_prodigy.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
namespace {

float round_bf16(float x) { return simd::bf16_to_float(simd::float_to_bf16(x)); }

// torch's lerp (ATen/native/Lerp.h and its vectorized form): one fused
// multiply-add from whichever end is nearer.
template <class T>
T lerp(T a, T b, T w) {
  return w < T(0.5) ? std::fma(w, b - a, a) : std::fma(w - T(1), b - a, b);
}

}  // namespace

// Momentum in T (float or double), the NS input in float32.
template <class T>
void momentum_ref(const T* g, T* buf, float* work, std::size_t n, const MuonMomentum<T>& c, double* sums) {
  double ss = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    buf[i] = lerp(buf[i], g[i], c.one_minus_mu);
    float u = static_cast<float>(c.nesterov ? lerp(g[i], buf[i], c.mu) : buf[i]);
    if (c.round_bf16) u = round_bf16(u);
    work[i] = u;
    ss += static_cast<double>(u) * u;
  }
  sums[0] += ss;
}

template <>
void muon_momentum<Isa::scalar, float>(const float* g, float* buf, float* work, std::size_t n,
                                       const MuonMomentum<float>& c, double* sums) {
  momentum_ref(g, buf, work, n, c, sums);
}

template <>
void muon_momentum<Isa::scalar, double>(const double* g, double* buf, float* work, std::size_t n,
                                        const MuonMomentum<double>& c, double* sums) {
  momentum_ref(g, buf, work, n, c, sums);
}

template <>
void muon_normalize<Isa::scalar>(float* work, std::size_t n, float norm, bool rb) {
  for (std::size_t i = 0; i < n; ++i) {
    const float x = work[i] / norm;
    work[i] = rb ? round_bf16(x) : x;
  }
}

template <>
void ns_combine<Isa::scalar>(float* out, const float* c, std::size_t n, float alpha, float beta, bool rb) {
  for (std::size_t i = 0; i < n; ++i) {
    const float x = (c ? beta * c[i] : 0.0f) + alpha * out[i];
    out[i] = rb ? round_bf16(x) : x;
  }
}

template <>
void muon_apply<Isa::scalar, float>(float* p, const float* work, std::size_t n, float decay, float lr) {
  for (std::size_t i = 0; i < n; ++i) p[i] = std::fma(-lr, work[i], p[i] * decay);
}

template <>
void muon_apply<Isa::scalar, double>(double* p, const float* work, std::size_t n, double decay, double lr) {
  for (std::size_t i = 0; i < n; ++i) p[i] = std::fma(-lr, static_cast<double>(work[i]), p[i] * decay);
}

}  // namespace slimgrad::kernels
