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

namespace {

template <class V>
V pg_ld(const typename V::Scalar* p, std::size_t k) {
  return k == V::width ? V::load(p) : load_partial<V>(p, k);
}
template <class V>
void pg_st(typename V::Scalar* p, std::size_t k, V x) {
  if (k == V::width)
    x.store(p);
  else
    store_partial(p, k, x);
}

}  // namespace

template <Isa I, class T>
void prodigy_accumulate(const T* p, const T* g, T* m, T* v, T* s, const T* p0, std::size_t begin, std::size_t end,
                        const ProdigyCoef<T>& c, double* sums) {
  using V = Vec<T, I>;
  const V cd = V::set1(c.coupled_decay), b1 = V::set1(c.beta1), b2 = V::set1(c.beta2), b3 = V::set1(c.beta3);
  const V ms = V::set1(c.m_scale), vs = V::set1(c.v_scale), ss = V::set1(c.s_scale);
  const bool coupled = c.coupled_decay != T(0);
  V num = V::zero(), den = V::zero();
  std::size_t i = begin;
  auto body = [&](std::size_t k) {
    const V pi = pg_ld<V>(p + i, k);
    V gi = pg_ld<V>(g + i, k);
    if (coupled) gi = fma(pi, cd, gi);
    num = num + gi * (pg_ld<V>(p0 + i, k) - pi);
    const V si = fma(gi, ss, pg_ld<V>(s + i, k) * b3);
    pg_st(s + i, k, si);
    den = den + abs(si);
    if (c.has_m) pg_st(m + i, k, fma(gi, ms, pg_ld<V>(m + i, k) * b1));
    pg_st(v + i, k, pg_ld<V>(v + i, k) * b2 + vs * gi * gi);
  };
  for (; i + V::width <= end; i += V::width) body(V::width);
  if (i < end) body(end - i);
  sums[0] += static_cast<double>(reduce_sum(num));
  sums[1] += static_cast<double>(reduce_sum(den));
}

template <Isa I, class T>
void prodigy_apply(T* p, const T* g, const T* m, const T* v, std::size_t n, const ProdigyCoef<T>& c) {
  using V = Vec<T, I>;
  const V cd = V::set1(c.coupled_decay), dd = V::set1(c.decoupled), step = V::set1(c.step), de = V::set1(c.d_eps);
  const bool coupled = c.coupled_decay != T(0), decoupled = c.decoupled != T(0);
  std::size_t i = 0;
  auto body = [&](std::size_t k) {
    V x = pg_ld<V>(p + i, k);
    V num;
    if (c.has_m) {
      num = pg_ld<V>(m + i, k);
    } else {
      num = pg_ld<V>(g + i, k);
      if (coupled) num = fma(x, cd, num);
    }
    const V denom = sqrt(pg_ld<V>(v + i, k)) + de;
    if (decoupled) x = fma(x, dd, x);
    pg_st(p + i, k, x + step * (num / denom));
  };
  for (; i + V::width <= n; i += V::width) body(V::width);
  if (i < n) body(n - i);
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
