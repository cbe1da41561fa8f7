// Muon's elementwise passes written once against simd.hpp, instantiated by
// the per-ISA units the build generates (area "muon exact": no contraction).
// Same operations in the same order as kernels_muon_scalar.cpp, the fused
// multiply-adds explicit (fma), so every elementwise result is the
// reference's bits; tails go through load_partial/store_partial (same
// arithmetic). The sum of squares adds in float lanes (double for float64
// params) per call and returns a double: it may differ from the reference's
// sequential double sum in the last bits. bfloat16 rounding goes through
// store_bf16/load_bf16 (round to nearest even, NaN kept). float64 params
// (momentum in double, work in float32) run a plain loop: the vocabulary has
// no double <-> float conversion, and Muon on float64 is rare.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "slimgrad/muon_prodigy.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

template <class V>
V muon_ld(const typename V::Scalar* p, std::size_t k) {
  return k == V::width ? V::load(p) : load_partial<V>(p, k);
}
template <class V>
void muon_st(typename V::Scalar* p, std::size_t k, V x) {
  if (k == V::width)
    x.store(p);
  else
    store_partial(p, k, x);
}
template <class V, class Body>
void muon_for(std::size_t n, Body&& body) {
  std::size_t i = 0;
  for (; i + V::width <= n; i += V::width) body(i, V::width);
  if (i < n) body(i, n - i);
}

template <Isa I>
Vec<float, I> round_bf16(Vec<float, I> x) {
  std::uint16_t tmp[Vec<float, I>::width];
  store_bf16(tmp, x);
  return load_bf16<I>(tmp);
}

template <class V>
V lerp_v(V a, V b, typename V::Scalar w) {
  using S = typename V::Scalar;
  return w < S(0.5) ? fma(V::set1(w), b - a, a) : fma(V::set1(w - S(1)), b - a, b);
}

float round_bf16_1(float x) { return bf16_to_float(float_to_bf16(x)); }
double lerp_1(double a, double b, double w) {
  return w < 0.5 ? std::fma(w, b - a, a) : std::fma(w - 1.0, b - a, b);
}

}  // namespace

template <Isa I, class T>
void muon_momentum(const T* g, T* buf, float* work, std::size_t n, const MuonMomentum<T>& c, double* sums) {
  if constexpr (std::is_same_v<T, float>) {
    using V = Vec<float, I>;
    const float w = c.one_minus_mu;
    V acc = V::zero();
    muon_for<V>(n, [&](std::size_t i, std::size_t k) {
      const V gi = muon_ld<V>(g + i, k);
      const V b = lerp_v(muon_ld<V>(buf + i, k), gi, w);
      muon_st(buf + i, k, b);
      V u = c.nesterov ? lerp_v(gi, b, c.mu) : b;
      if (c.round_bf16) u = round_bf16<I>(u);
      muon_st(work + i, k, u);
      acc = acc + u * u;  // padded lanes load zeros: they add 0
    });
    sums[0] += static_cast<double>(reduce_sum(acc));
  } else {
    double ss = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      buf[i] = lerp_1(buf[i], g[i], c.one_minus_mu);
      float u = static_cast<float>(c.nesterov ? lerp_1(g[i], buf[i], c.mu) : buf[i]);
      if (c.round_bf16) u = round_bf16_1(u);
      work[i] = u;
      ss += static_cast<double>(u) * u;
    }
    sums[0] += ss;
  }
}

template <Isa I>
void muon_normalize(float* work, std::size_t n, float norm, bool rb) {
  using V = Vec<float, I>;
  const V d = V::set1(norm);
  muon_for<V>(n, [&](std::size_t i, std::size_t k) {
    V x = muon_ld<V>(work + i, k) / d;
    if (rb) x = round_bf16<I>(x);
    muon_st(work + i, k, x);
  });
}

template <Isa I>
void ns_combine(float* out, const float* c, std::size_t n, float alpha, float beta, bool rb) {
  using V = Vec<float, I>;
  const V a = V::set1(alpha), b = V::set1(beta);
  muon_for<V>(n, [&](std::size_t i, std::size_t k) {
    V x = (c ? b * muon_ld<V>(c + i, k) : V::zero()) + a * muon_ld<V>(out + i, k);
    if (rb) x = round_bf16<I>(x);
    muon_st(out + i, k, x);
  });
}

template <Isa I, class T>
void muon_apply(T* p, const float* work, std::size_t n, T decay, T lr) {
  if constexpr (std::is_same_v<T, float>) {
    using V = Vec<float, I>;
    const V d = V::set1(decay), nl = V::set1(-lr);
    muon_for<V>(n, [&](std::size_t i, std::size_t k) {
      muon_st(p + i, k, fma(nl, muon_ld<V>(work + i, k), muon_ld<V>(p + i, k) * d));
    });
  } else {
    for (std::size_t i = 0; i < n; ++i) p[i] = std::fma(-lr, static_cast<double>(work[i]), p[i] * decay);
  }
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void muon_momentum<SLIMGRAD_UNIT_ISA, float>(const float*, float*, float*, std::size_t,
                                                      const MuonMomentum<float>&, double*);
template void muon_momentum<SLIMGRAD_UNIT_ISA, double>(const double*, double*, float*, std::size_t,
                                                       const MuonMomentum<double>&, double*);
template void muon_normalize<SLIMGRAD_UNIT_ISA>(float*, std::size_t, float, bool);
template void ns_combine<SLIMGRAD_UNIT_ISA>(float*, const float*, std::size_t, float, float, bool);
template void muon_apply<SLIMGRAD_UNIT_ISA, float>(float*, const float*, std::size_t, float, float);
template void muon_apply<SLIMGRAD_UNIT_ISA, double>(double*, const float*, std::size_t, double, double);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
