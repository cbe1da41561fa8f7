// Distillation kernels written once against simd.hpp, instantiated by
// the per-ISA units the build generates (CMakeLists.txt).
//
//  - vexp: a vectorized exp (Cephes-style). x = n ln2 + r with n = round(x /
//    ln2), |r| <= ln2 / 2, ln2 split in two (Cody-Waite) so n * ln2_hi is
//    exact; exp(r) by a polynomial (float: Cephes' degree-5 minimax, double:
//    Taylor to degree 13); 2^n built in the exponent bits (raw intrinsics
//    below: the Vec vocabulary has no rounding or integer lanes).
//    Measured max relative error against exp in float64 over [-87, 88]:
//    float32 2 ulp (< 2.4e-7), float64 < 4e-16 (tests/test_distill.py
//    checks both). Domain: x > hi saturates at exp(hi) (float 88, double 709);
//    x < lo (float -87.34, double -708.39, where exp falls below the smallest
//    normal number) gives exactly 0, -inf gives 0, NaN stays NaN. The KD
//    kernels only call it on x <= 0.
//  - kd_row_stats: one streaming pass per row, in chunks of kChunk logits
//    (kept in L1): first the chunk's maxima, then, if a maximum grew, the
//    sums so far are rescaled (in double, once per chunk, not per element),
//    then the chunk's exponentials are summed in T lanes and the lane sums
//    added to double totals. Tails: a lane mask (select) so padding lanes
//    never contribute, whatever their values.
//    Non-finite logits: a teacher -inf (masked class, p_t = 0) contributes
//    0 to the KL term (0 log 0 = 0), also in chunks seen before any finite
//    logit; NaN or +inf make the row NaN; an all -inf row is NaN (no softmax).
//  - kd_row_grad: one pass, every exponential re-evaluated against the final
//    reference points (cheaper than storing them: V-wide rows stay in L2).
//  - mse_grad: one FMA accumulator in T lanes; the caller reduces blocks of
//    kMseBlock in double in order.
#pragma once

#include <cmath>
#include <cstddef>
#include <limits>
#include <type_traits>

#include "slimgrad/distill.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {  // internal linkage: each ISA file has its own copy

// Logits per chunk of the statistics pass: two rows' chunks (s and t) stay in
// L1 even in float64 (2 x 4 KiB), and the per-chunk work (horizontal maxima,
// rescaling with std::exp) is amortised over 512 elements.
constexpr std::size_t kChunk = 512;

#if defined(__AVX512F__)
inline F16 round_nearest(F16 x) {
  return {_mm512_roundscale_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
inline D8 round_nearest(D8 x) {
  return {_mm512_roundscale_pd(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
}
// 2^n for integral n in the normal exponent range.
inline F16 pow2i(F16 n) {
  const __m512i e = _mm512_add_epi32(_mm512_cvtps_epi32(n.v), _mm512_set1_epi32(127));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(e, 23))};
}
inline D8 pow2i(D8 n) {
  const __m512i e =
      _mm512_add_epi64(_mm512_cvtepi32_epi64(_mm512_cvtpd_epi32(n.v)), _mm512_set1_epi64(1023));
  return {_mm512_castsi512_pd(_mm512_slli_epi64(e, 52))};
}
#elif defined(__AVX2__)
inline F8 round_nearest(F8 x) { return {_mm256_round_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline D4 round_nearest(D4 x) { return {_mm256_round_pd(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
inline F8 pow2i(F8 n) {
  const __m256i e = _mm256_add_epi32(_mm256_cvtps_epi32(n.v), _mm256_set1_epi32(127));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(e, 23))};
}
inline D4 pow2i(D4 n) {
  const __m256i e =
      _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n.v)), _mm256_set1_epi64x(1023));
  return {_mm256_castsi256_pd(_mm256_slli_epi64(e, 52))};
}
#endif

template <class T>
struct ExpConst;
template <>
struct ExpConst<float> {
  static constexpr float hi = 88.0f, lo = -87.33654f;  // lo = log(FLT_MIN)
  static constexpr float log2e = 1.44269504088896341f;
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
};
template <>
struct ExpConst<double> {
  static constexpr double hi = 709.0, lo = -708.3964185322641;  // lo = log(DBL_MIN)
  static constexpr double log2e = 1.4426950408889634;
  static constexpr double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
};

template <class V>
inline V exp_poly(V r, float) {
  V p = V::set1(1.9875691500e-4f);
  p = fma(p, r, V::set1(1.3981999507e-3f));
  p = fma(p, r, V::set1(8.3334519073e-3f));
  p = fma(p, r, V::set1(4.1665795894e-2f));
  p = fma(p, r, V::set1(1.6666665459e-1f));
  p = fma(p, r, V::set1(5.0000001201e-1f));
  return fma(p, r * r, r) + V::set1(1.0f);
}
template <class V>
inline V exp_poly(V r, double) {
  // Taylor: the first omitted term, r^14/14!, is below 5e-18 for |r| <= ln2/2.
  constexpr double c[] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                          1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,      1.0 / 720.0,
                          1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,         0.5,
                          1.0,                1.0};
  V p = V::set1(c[0]);
  for (int i = 1; i < 14; ++i) p = fma(p, r, V::set1(c[i]));
  return p;
}

template <class V>
inline V vexp(V x) {
  using T = typename V::Scalar;
  using C = ExpConst<T>;
  const auto tiny = lt(x, V::set1(C::lo));  // includes -inf; false for NaN
  // min/max return their first argument when a NaN is involved: NaN survives.
  x = max(min(x, V::set1(C::hi)), V::set1(C::lo));
  const V n = round_nearest(x * V::set1(C::log2e));
  V r = fma(n, V::set1(-C::ln2_hi), x);
  r = fma(n, V::set1(-C::ln2_lo), r);
  const V y = exp_poly(r, T{}) * pow2i(n);
  return select(tiny, V::zero(), y);
}

template <class V>
inline typename V::Scalar hmax(V a) {
  typename V::Scalar tmp[V::width];
  a.store(tmp);
  typename V::Scalar m = tmp[0];
  for (std::size_t i = 1; i < V::width; ++i) m = tmp[i] > m ? tmp[i] : m;
  return m;
}

// Lanes [0, k) set.
template <class V>
inline auto tail_mask(std::size_t k) {
  using T = typename V::Scalar;
  alignas(64) static constexpr T iota[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return lt(V::load(iota), V::set1(static_cast<T>(k)));
}

// The reference point of a stream whose maximum so far is m: m * scale,
// or 0 while m is -inf (every logit so far masked).
template <class T>
inline T ref(T m, T scale) {
  return m == -std::numeric_limits<T>::infinity() ? T(0) : static_cast<T>(m * scale);
}

template <Isa I, class T, bool Z, bool DT, bool U>
void row_stats_impl(const T* s, const T* t, std::size_t n, T inv_t, KdRowStats* out) {
  static_assert(!DT || Z, "the teacher term is relative to the student's softmax");
  using V = Vec<T, I>;
  constexpr std::size_t W = V::width;
  constexpr T ninf = -std::numeric_limits<T>::infinity();
  const V vinv = V::set1(inv_t);
  T s_max = ninf, t_max = ninf;
  double z_sum = 0, t_sum = 0, w = 0, u_sum = 0;
  for (std::size_t c = 0; c < n; c += kChunk) {
    const std::size_t m = n - c < kChunk ? n - c : kChunk;
    const std::size_t full = m - m % W, k = m - full;
    const T* sc = s + c;
    const T* tc = DT ? t + c : nullptr;

    V ms = V::set1(ninf), mt = V::set1(ninf);
    for (std::size_t i = 0; i < full; i += W) {
      ms = max(V::load(sc + i), ms);
      if constexpr (DT) mt = max(V::load(tc + i), mt);
    }
    if (k) {
      const auto keep = tail_mask<V>(k);
      ms = max(select(keep, load_partial<V>(sc + full, k), V::set1(ninf)), ms);
      if constexpr (DT) mt = max(select(keep, load_partial<V>(tc + full, k), V::set1(ninf)), mt);
    }

    // Move the reference points to the new maxima. The sums so far were
    // taken against the old ones: exp terms scale by exp(old - new); w also
    // holds (dt - dz) factors, which shift with the reference points.
    // While a maximum is still -inf (only masked logits so far) the
    // reference is 0 instead (ref below): -inf - -inf would be NaN. Those
    // sums are then exactly 0 and need no rescaling (exp(0 - a_new) could
    // overflow), except w's shift by the student's reference.
    const T cs = hmax(ms);
    if (cs > s_max) {
      const double a_old = ref(s_max, inv_t), a_new = ref(cs, inv_t);
      if constexpr (DT) w += (a_new - a_old) * t_sum;
      if (s_max != ninf) {
        if constexpr (Z) z_sum *= std::exp(a_old - a_new);
        if constexpr (U) u_sum *= std::exp(static_cast<double>(s_max) - static_cast<double>(cs));
      }
      s_max = cs;
    }
    if constexpr (DT) {
      const T ct = hmax(mt);
      if (ct > t_max) {
        if (t_max != ninf) {
          const double a_old = ref(t_max, inv_t), a_new = ref(ct, inv_t);
          const double f = std::exp(a_old - a_new);
          w = f * (w - (a_new - a_old) * t_sum);
          t_sum *= f;
        }
        t_max = ct;
      }
    }

    const V a_s = V::set1(ref(s_max, inv_t)), a_t = V::set1(ref(t_max, inv_t));
    const V m_u = V::set1(ref(s_max, T(1)));
    V acc_z = V::zero(), acc_t = V::zero(), acc_w = V::zero(), acc_u = V::zero();
    auto accumulate = [&](V sv, V tv, auto keep) {
      V dz = V::zero();
      if constexpr (Z) {
        dz = sv * vinv - a_s;
        acc_z = acc_z + keep(vexp(dz));
      }
      if constexpr (DT) {
        const V dt = tv * vinv - a_t;
        const V et = keep(vexp(dt));
        acc_t = acc_t + et;
        // p_t == 0 (a masked -inf logit, or an underflow) contributes 0
        // (0 log 0 = 0) even where dt - dz is infinite or NaN; NaN et stays.
        acc_w = fma(et, keep(select(le(et, V::zero()), V::zero(), dt - dz)), acc_w);
      }
      if constexpr (U) acc_u = acc_u + keep(vexp(sv - m_u));
    };
    for (std::size_t i = 0; i < full; i += W)
      accumulate(V::load(sc + i), DT ? V::load(tc + i) : V::zero(), [](V v) { return v; });
    if (k) {
      const auto mask = tail_mask<V>(k);
      accumulate(load_partial<V>(sc + full, k), DT ? load_partial<V>(tc + full, k) : V::zero(),
                 [&](V v) { return select(mask, v, V::zero()); });
    }
    if constexpr (Z) z_sum += reduce_sum(acc_z);
    if constexpr (DT) {
      t_sum += reduce_sum(acc_t);
      w += reduce_sum(acc_w);
    }
    if constexpr (U) u_sum += reduce_sum(acc_u);
  }
  *out = KdRowStats{s_max, DT ? static_cast<double>(t_max) : 0.0, z_sum, t_sum, w, u_sum};
}

template <Isa I, class T, bool Z, bool DT, bool U>
void row_grad_impl(const T* s, const T* t, T* g, std::size_t n, const KdGradTerms<T>& c) {
  using V = Vec<T, I>;
  constexpr std::size_t W = V::width;
  const V inv = V::set1(c.inv_t), a_s = V::set1(c.a_s), l_s = V::set1(c.l_s), a_t = V::set1(c.a_t),
          l_t = V::set1(c.l_t), m_u = V::set1(c.m_u), l_u = V::set1(c.l_u), c_z = V::set1(c.c_z),
          neg_c_t = V::set1(-c.c_t), c_u = V::set1(c.c_u);
  auto grad = [&](V sv, V tv) {
    V gi = V::zero();
    if constexpr (Z) gi = c_z * vexp((sv * inv - a_s) - l_s);
    if constexpr (DT) gi = fma(neg_c_t, vexp((tv * inv - a_t) - l_t), gi);
    if constexpr (U) gi = fma(c_u, vexp((sv - m_u) - l_u), gi);
    return gi;
  };
  std::size_t i = 0;
  for (; i + W <= n; i += W) grad(V::load(s + i), DT ? V::load(t + i) : V::zero()).store(g + i);
  if (i < n) {
    const std::size_t k = n - i;
    store_partial(g + i, k, grad(load_partial<V>(s + i, k), DT ? load_partial<V>(t + i, k) : V::zero()));
  }
}

}  // namespace

// fn(T, Z, U) with the row mode as std::bool_constant template flags: the
// five combinations the kernels are instantiated for (without t and z, u is
// always set).
template <class Fn>
void with_row_mode(KdRowMode mode, Fn&& fn) {
  using Yes = std::true_type;
  using No = std::false_type;
  if (mode.t) {
    mode.u ? fn(Yes{}, Yes{}, Yes{}) : fn(Yes{}, Yes{}, No{});
  } else if (mode.z) {
    mode.u ? fn(Yes{}, No{}, Yes{}) : fn(Yes{}, No{}, No{});
  } else {
    fn(No{}, No{}, Yes{});
  }
}

template <Isa I, class T>
void kd_row_stats(const T* s, const T* t, std::size_t n, T inv_t, KdRowMode mode, KdRowStats* out) {
  with_row_mode(mode, [&](auto a, auto b, auto c) {
    row_stats_impl<I, T, decltype(a)::value, decltype(b)::value, decltype(c)::value>(s, t, n, inv_t, out);
  });
}

template <Isa I, class T>
void kd_row_grad(const T* s, const T* t, T* g, std::size_t n, const KdGradTerms<T>& c, KdRowMode mode) {
  with_row_mode(mode, [&](auto a, auto b, auto u) {
    row_grad_impl<I, T, decltype(a)::value, decltype(b)::value, decltype(u)::value>(s, t, g, n, c);
  });
}

template <Isa I, class T>
double mse_grad(const T* s, const T* t, T* g, std::size_t n, T scale) {
  using V = Vec<T, I>;
  const V sc = V::set1(scale);
  const V acc = sum_sq_diff<V>(
      n, [&](std::size_t i, std::size_t k) { return load_n<V>(s + i, k) - load_n<V>(t + i, k); },  // pads 0
      [&](std::size_t i, std::size_t k, V d) { store_n(g + i, k, sc * d); });
  return static_cast<double>(reduce_sum(acc));
}

template <Isa I, class T>
void exp(const T* x, T* y, std::size_t n) {
  using V = Vec<T, I>;
  std::size_t i = 0;
  for (; i + V::width <= n; i += V::width) vexp(V::load(x + i)).store(y + i);
  if (i < n) store_partial(y + i, n - i, vexp(load_partial<V>(x + i, n - i)));
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void kd_row_stats<SLIMGRAD_UNIT_ISA, float>(const float*, const float*, std::size_t, float, KdRowMode, KdRowStats*);
template void kd_row_stats<SLIMGRAD_UNIT_ISA, double>(const double*, const double*, std::size_t, double, KdRowMode, KdRowStats*);
template void kd_row_grad<SLIMGRAD_UNIT_ISA, float>(const float*, const float*, float*, std::size_t, const KdGradTerms<float>&, KdRowMode);
template void kd_row_grad<SLIMGRAD_UNIT_ISA, double>(const double*, const double*, double*, std::size_t, const KdGradTerms<double>&, KdRowMode);
template double mse_grad<SLIMGRAD_UNIT_ISA, float>(const float*, const float*, float*, std::size_t, float);
template double mse_grad<SLIMGRAD_UNIT_ISA, double>(const double*, const double*, double*, std::size_t, double);
template void exp<SLIMGRAD_UNIT_ISA, float>(const float*, float*, std::size_t);
template void exp<SLIMGRAD_UNIT_ISA, double>(const double*, double*, std::size_t);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
