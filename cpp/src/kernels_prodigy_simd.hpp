// Prodigy's two passes written once against simd.hpp, instantiated by the
// per-ISA units the build generates (area "prodigy exact": no contraction).
// Same operations in the same order as kernels_prodigy_scalar.cpp (the
// fused multiply-adds explicit), so m, v, s and p are the reference's bits
// on every ISA; the two sums add in T lanes within a piece (<= kGrain
// elements), so they (and through them d) may differ from the reference's
// double sums in the last bits. Only slice_p == 1 is vectorized: with
// slice_p > 1 (statistics on every slice_p-th element, strided; a
// memory-saving approximation) prodigy.cpp runs the scalar reference. Tails
// go through load_partial/store_partial; padded lanes load zeros and add 0
// to the sums.
#pragma once

#include <cmath>

#include "slimgrad/muon_prodigy.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

template <Isa I, class T>
void prodigy_accumulate(const T* p, const T* g, T* m, T* v, T* s, const T* p0, std::size_t begin, std::size_t end,
                        const ProdigyCoef<T>& c, double* sums) {
  using V = Vec<T, I>;
  const V cd = V::set1(c.coupled_decay), b1 = V::set1(c.beta1), b2 = V::set1(c.beta2), b3 = V::set1(c.beta3);
  const V ms = V::set1(c.m_scale), vs = V::set1(c.v_scale), ss = V::set1(c.s_scale);
  const bool coupled = c.coupled_decay != T(0);
  V num = V::zero(), den = V::zero();
  for_each_vec<V>(end - begin, [&](std::size_t i0, std::size_t k) {
    const std::size_t i = begin + i0;
    const V pi = load_n<V>(p + i, k);
    V gi = load_n<V>(g + i, k);
    if (coupled) gi = fma(pi, cd, gi);
    num = num + gi * (load_n<V>(p0 + i, k) - pi);
    const V si = fma(gi, ss, load_n<V>(s + i, k) * b3);
    store_n(s + i, k, si);
    den = den + abs(si);
    if (c.has_m) store_n(m + i, k, fma(gi, ms, load_n<V>(m + i, k) * b1));
    store_n(v + i, k, load_n<V>(v + i, k) * b2 + vs * gi * gi);
  });
  sums[0] += static_cast<double>(reduce_sum(num));
  sums[1] += static_cast<double>(reduce_sum(den));
}

template <Isa I, class T>
void prodigy_apply(T* p, const T* g, const T* m, const T* v, std::size_t n, const ProdigyCoef<T>& c) {
  using V = Vec<T, I>;
  const V cd = V::set1(c.coupled_decay), dd = V::set1(c.decoupled), step = V::set1(c.step), de = V::set1(c.d_eps);
  const bool coupled = c.coupled_decay != T(0), decoupled = c.decoupled != T(0);
  for_each_vec<V>(n, [&](std::size_t i, std::size_t k) {
    V x = load_n<V>(p + i, k);
    V num;
    if (c.has_m) {
      num = load_n<V>(m + i, k);
    } else {
      num = load_n<V>(g + i, k);
      if (coupled) num = fma(x, cd, num);
    }
    const V denom = sqrt(load_n<V>(v + i, k)) + de;
    if (decoupled) x = fma(x, dd, x);
    store_n(p + i, k, x + step * (num / denom));
  });
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
#define SLIMGRAD_PRODIGY_INST(T)                                                                              \
  template void prodigy_accumulate<SLIMGRAD_UNIT_ISA, T>(const T*, const T*, T*, T*, T*, const T*, std::size_t, \
                                                         std::size_t, const ProdigyCoef<T>&, double*);        \
  template void prodigy_apply<SLIMGRAD_UNIT_ISA, T>(T*, const T*, const T*, const T*, std::size_t,            \
                                                    const ProdigyCoef<T>&);
SLIMGRAD_PRODIGY_INST(float)
SLIMGRAD_PRODIGY_INST(double)
#undef SLIMGRAD_PRODIGY_INST
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
