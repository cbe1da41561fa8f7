// Muon's elementwise passes written once against simd.hpp, instantiated by
// the per-ISA units the build generates (area "muon exact": no contraction).
// Same operations in the same order as kernels_muon_scalar.cpp, the fused
// multiply-adds explicit (fma), so every elementwise result is the
// reference's bits; tails go through load_partial/store_partial (same
// arithmetic). The sum of squares adds in float lanes per call and returns
// a double: it may differ from the reference's
// sequential double sum in the last bits. bfloat16 rounding goes through
// store_bf16/load_bf16 (round to nearest even, NaN kept). float32 params
// only: float64 params (momentum in double, work in float32) run the scalar
// reference (muon.cpp), as the vocabulary has no double <-> float
// conversion, and Muon on float64 is rare.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "slimgrad/muon_prodigy.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

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

}  // namespace

template <Isa I, class T>
void muon_momentum(const T* g, T* buf, float* work, std::size_t n, const MuonMomentum<T>& c, double* sums) {
  static_assert(std::is_same_v<T, float>, "float64 params run the scalar reference (muon.cpp)");
  using V = Vec<float, I>;
  const float w = c.one_minus_mu;
  V acc = V::zero();
  for_each_vec<V>(n, [&](std::size_t i, std::size_t k) {
    const V gi = load_n<V>(g + i, k);
    const V b = lerp_v(load_n<V>(buf + i, k), gi, w);
    store_n(buf + i, k, b);
    V u = c.nesterov ? lerp_v(gi, b, c.mu) : b;
    if (c.round_bf16) u = round_bf16<I>(u);
    store_n(work + i, k, u);
    acc = acc + u * u;  // padded lanes load zeros: they add 0
  });
  sums[0] += static_cast<double>(reduce_sum(acc));
}

template <Isa I>
void muon_normalize(float* work, std::size_t n, float norm, bool rb) {
  using V = Vec<float, I>;
  const V d = V::set1(norm);
  for_each_vec<V>(n, [&](std::size_t i, std::size_t k) {
    V x = load_n<V>(work + i, k) / d;
    if (rb) x = round_bf16<I>(x);
    store_n(work + i, k, x);
  });
}

template <Isa I>
void ns_combine(float* out, const float* c, std::size_t n, float alpha, float beta, bool rb) {
  using V = Vec<float, I>;
  const V a = V::set1(alpha), b = V::set1(beta);
  for_each_vec<V>(n, [&](std::size_t i, std::size_t k) {
    V x = (c ? b * load_n<V>(c + i, k) : V::zero()) + a * load_n<V>(out + i, k);
    if (rb) x = round_bf16<I>(x);
    store_n(out + i, k, x);
  });
}

template <Isa I, class T>
void muon_apply(T* p, const float* work, std::size_t n, T decay, T lr) {
  static_assert(std::is_same_v<T, float>, "float64 params run the scalar reference (muon.cpp)");
  using V = Vec<float, I>;
  const V d = V::set1(decay), nl = V::set1(-lr);
  for_each_vec<V>(n, [&](std::size_t i, std::size_t k) {
    store_n(p + i, k, fma(nl, load_n<V>(work + i, k), load_n<V>(p + i, k) * d));
  });
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void muon_momentum<SLIMGRAD_UNIT_ISA, float>(const float*, float*, float*, std::size_t,
                                                      const MuonMomentum<float>&, double*);
template void muon_normalize<SLIMGRAD_UNIT_ISA>(float*, std::size_t, float, bool);
template void ns_combine<SLIMGRAD_UNIT_ISA>(float*, const float*, std::size_t, float, float, bool);
template void muon_apply<SLIMGRAD_UNIT_ISA, float>(float*, const float*, std::size_t, float, float);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
