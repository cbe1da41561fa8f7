// Scalar reference (the oracle) of Prodigy's two passes (muon_prodigy.hpp,
// ProdigyCoef): plain loops, compiled with -ffp-contract=off. The
// multiply-adds torch fuses in prodigyopt's ops (add with alpha:
// grad.add_(p, alpha), s.add_(g, alpha), exp_avg.add_(g, alpha),
// p.add_(p, alpha)) are std::fma; addcmul / addcdiv are a multiply then an
// add, as torch's CPU kernels write them. Sums in double, element order.
#include <cmath>

#include "slimgrad/muon_prodigy.hpp"

namespace slimgrad::kernels {
namespace {

template <class T>
void accumulate_ref(const T* p, const T* g, T* m, T* v, T* s, const T* p0, std::size_t begin, std::size_t end,
                    const ProdigyCoef<T>& c, double* sums) {
  double num = 0.0, den = 0.0;
  for (std::size_t i = begin; i < end; ++i) {
    const T gi = c.coupled_decay != T(0) ? std::fma(p[i], c.coupled_decay, g[i]) : g[i];
    if (i % c.slice_p == 0) {
      const std::size_t j = i / c.slice_p;
      num += static_cast<double>(gi * (p0[j] - p[i]));
      s[j] = std::fma(gi, c.s_scale, s[j] * c.beta3);
      den += std::fabs(static_cast<double>(s[j]));
    }
    if (c.has_m) m[i] = std::fma(gi, c.m_scale, m[i] * c.beta1);
    v[i] = v[i] * c.beta2 + c.v_scale * gi * gi;
  }
  sums[0] += num;
  sums[1] += den;
}

template <class T>
void apply_ref(T* p, const T* g, const T* m, const T* v, std::size_t n, const ProdigyCoef<T>& c) {
  for (std::size_t i = 0; i < n; ++i) {
    const T gi = c.coupled_decay != T(0) ? std::fma(p[i], c.coupled_decay, g[i]) : g[i];
    const T denom = std::sqrt(v[i]) + c.d_eps;
    T x = p[i];
    if (c.decoupled != T(0)) x = std::fma(x, c.decoupled, x);
    p[i] = x + c.step * ((c.has_m ? m[i] : gi) / denom);
  }
}

}  // namespace

#define SLIMGRAD_PRODIGY_REF(T)                                                                               \
  template <>                                                                                                 \
  void prodigy_accumulate<Isa::scalar, T>(const T* p, const T* g, T* m, T* v, T* s, const T* p0,              \
                                          std::size_t begin, std::size_t end, const ProdigyCoef<T>& c,        \
                                          double* sums) {                                                     \
    accumulate_ref(p, g, m, v, s, p0, begin, end, c, sums);                                                   \
  }                                                                                                           \
  template <>                                                                                                 \
  void prodigy_apply<Isa::scalar, T>(T * p, const T* g, const T* m, const T* v, std::size_t n,                \
                                     const ProdigyCoef<T>& c) {                                               \
    apply_ref(p, g, m, v, n, c);                                                                              \
  }
SLIMGRAD_PRODIGY_REF(float)
SLIMGRAD_PRODIGY_REF(double)
#undef SLIMGRAD_PRODIGY_REF

}  // namespace slimgrad::kernels
