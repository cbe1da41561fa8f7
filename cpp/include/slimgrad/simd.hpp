// A deliberately small SIMD vocabulary so a kernel is written once, as a
// template on Isa, and compiled per ISA file (kernels_<area>_avx2.cpp with
// x86-64-v3 flags, _avx512.cpp with x86-64-v4). The scalar *reference* of a
// kernel is written as plain loops in its own _scalar.cpp file, not through
// this header: that keeps the oracle independent of the code it checks.
//
// Vec<T, I> holds `width` lanes of T (float or double). Operations are free
// functions (a + b, fma(a, b, c), select(m, a, b), ...). Masks are the
// ISA's natural type (a vector on AVX2, a k-register on AVX-512).
// Tails: load_partial / store_partial handle the last k < width elements, so
// the tail goes through the same arithmetic as the body (same rounding).
// Half types: load_f16 / load_bf16 widen to Vec<float, I>; store_f16 /
// store_bf16 round to nearest even (NaN stays NaN).
//
// The one-definition-rule trap of per-file ISA flags: an inline function
// that the compiler keeps out of line in an AVX-512 file and in a baseline
// file is one symbol, and the linker may keep the AVX-512 copy for both,
// which faults on a CPU without AVX-512. So everything here lives in an
// inline namespace named after the including file's target
// (SLIMGRAD_TARGET_NAMESPACE, like Highway's HWY_NAMESPACE): each target gets
// its own symbols, and callers still write simd::Vec. Headers with other
// inline helpers used from ISA files wrap them the same way.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "slimgrad/isa.hpp"

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__AVX512F__)
#define SLIMGRAD_TARGET_NAMESPACE target_x86_64_v4
#elif defined(__AVX2__)
#define SLIMGRAD_TARGET_NAMESPACE target_x86_64_v3
#else
#define SLIMGRAD_TARGET_NAMESPACE target_baseline
#endif

namespace slimgrad::simd {
inline namespace SLIMGRAD_TARGET_NAMESPACE {

template <class T, Isa I>
struct Vec;

// ---------------------------------------------------------------- scalar
template <class T>
struct Vec<T, Isa::scalar> {
  using Scalar = T;
  using Mask = bool;
  static constexpr std::size_t width = 1;
  T v;
  static Vec load(const T* p) { return {*p}; }
  void store(T* p) const { *p = v; }
  static Vec set1(T x) { return {x}; }
  static Vec zero() { return {T(0)}; }
};

template <class T> inline Vec<T, Isa::scalar> operator+(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return {a.v + b.v}; }
template <class T> inline Vec<T, Isa::scalar> operator-(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return {a.v - b.v}; }
template <class T> inline Vec<T, Isa::scalar> operator*(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return {a.v * b.v}; }
template <class T> inline Vec<T, Isa::scalar> operator/(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return {a.v / b.v}; }
template <class T> inline Vec<T, Isa::scalar> fma(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b, Vec<T, Isa::scalar> c) { return {std::fma(a.v, b.v, c.v)}; }
template <class T> inline Vec<T, Isa::scalar> sqrt(Vec<T, Isa::scalar> a) { return {std::sqrt(a.v)}; }
template <class T> inline Vec<T, Isa::scalar> min(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return {b.v < a.v ? b.v : a.v}; }
template <class T> inline Vec<T, Isa::scalar> max(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return {a.v < b.v ? b.v : a.v}; }
template <class T> inline Vec<T, Isa::scalar> abs(Vec<T, Isa::scalar> a) { return {std::fabs(a.v)}; }
template <class T> inline bool lt(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return a.v < b.v; }
template <class T> inline bool le(Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return a.v <= b.v; }
template <class T> inline bool isfinite(Vec<T, Isa::scalar> a) { return std::isfinite(a.v); }
template <class T> inline Vec<T, Isa::scalar> select(bool m, Vec<T, Isa::scalar> a, Vec<T, Isa::scalar> b) { return m ? a : b; }
template <class T> inline T reduce_sum(Vec<T, Isa::scalar> a) { return a.v; }
inline bool mask_and(bool a, bool b) { return a && b; }
inline bool all(bool m) { return m; }
inline bool any(bool m) { return m; }

// Half-type loads are templates on the ISA (they differ only in return type).
template <Isa I> Vec<float, I> load_f16(const std::uint16_t* p);
template <Isa I> Vec<float, I> load_bf16(const std::uint16_t* p);

#if defined(__AVX2__)
// ------------------------------------------------------------------ avx2
template <>
struct Vec<float, Isa::avx2> {
  using Scalar = float;
  using Mask = __m256;
  static constexpr std::size_t width = 8;
  __m256 v;
  static Vec load(const float* p) { return {_mm256_loadu_ps(p)}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  static Vec set1(float x) { return {_mm256_set1_ps(x)}; }
  static Vec zero() { return {_mm256_setzero_ps()}; }
};
template <>
struct Vec<double, Isa::avx2> {
  using Scalar = double;
  using Mask = __m256d;
  static constexpr std::size_t width = 4;
  __m256d v;
  static Vec load(const double* p) { return {_mm256_loadu_pd(p)}; }
  void store(double* p) const { _mm256_storeu_pd(p, v); }
  static Vec set1(double x) { return {_mm256_set1_pd(x)}; }
  static Vec zero() { return {_mm256_setzero_pd()}; }
};
using F8 = Vec<float, Isa::avx2>;
using D4 = Vec<double, Isa::avx2>;
inline F8 operator+(F8 a, F8 b) { return {_mm256_add_ps(a.v, b.v)}; }
inline F8 operator-(F8 a, F8 b) { return {_mm256_sub_ps(a.v, b.v)}; }
inline F8 operator*(F8 a, F8 b) { return {_mm256_mul_ps(a.v, b.v)}; }
inline F8 operator/(F8 a, F8 b) { return {_mm256_div_ps(a.v, b.v)}; }
inline F8 fma(F8 a, F8 b, F8 c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
inline F8 sqrt(F8 a) { return {_mm256_sqrt_ps(a.v)}; }
// min/max return b when a is NaN, like `a < b ? a : b` reversed; see scalar.
inline F8 min(F8 a, F8 b) { return {_mm256_min_ps(b.v, a.v)}; }
inline F8 max(F8 a, F8 b) { return {_mm256_max_ps(b.v, a.v)}; }
inline F8 abs(F8 a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
inline __m256 lt(F8 a, F8 b) { return _mm256_cmp_ps(a.v, b.v, _CMP_LT_OQ); }
inline __m256 le(F8 a, F8 b) { return _mm256_cmp_ps(a.v, b.v, _CMP_LE_OQ); }
// x - x is 0 for finite x and NaN for +-inf and NaN.
inline __m256 isfinite(F8 a) { return _mm256_cmp_ps(_mm256_sub_ps(a.v, a.v), _mm256_setzero_ps(), _CMP_EQ_OQ); }
inline F8 select(__m256 m, F8 a, F8 b) { return {_mm256_blendv_ps(b.v, a.v, m)}; }
inline __m256 mask_and(__m256 a, __m256 b) { return _mm256_and_ps(a, b); }
inline bool all(__m256 m) { return _mm256_movemask_ps(m) == 0xFF; }
inline bool any(__m256 m) { return _mm256_movemask_ps(m) != 0; }
inline float reduce_sum(F8 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline D4 operator+(D4 a, D4 b) { return {_mm256_add_pd(a.v, b.v)}; }
inline D4 operator-(D4 a, D4 b) { return {_mm256_sub_pd(a.v, b.v)}; }
inline D4 operator*(D4 a, D4 b) { return {_mm256_mul_pd(a.v, b.v)}; }
inline D4 operator/(D4 a, D4 b) { return {_mm256_div_pd(a.v, b.v)}; }
inline D4 fma(D4 a, D4 b, D4 c) { return {_mm256_fmadd_pd(a.v, b.v, c.v)}; }
inline D4 sqrt(D4 a) { return {_mm256_sqrt_pd(a.v)}; }
inline D4 min(D4 a, D4 b) { return {_mm256_min_pd(b.v, a.v)}; }
inline D4 max(D4 a, D4 b) { return {_mm256_max_pd(b.v, a.v)}; }
inline D4 abs(D4 a) { return {_mm256_andnot_pd(_mm256_set1_pd(-0.0), a.v)}; }
inline __m256d lt(D4 a, D4 b) { return _mm256_cmp_pd(a.v, b.v, _CMP_LT_OQ); }
inline __m256d le(D4 a, D4 b) { return _mm256_cmp_pd(a.v, b.v, _CMP_LE_OQ); }
inline __m256d isfinite(D4 a) { return _mm256_cmp_pd(_mm256_sub_pd(a.v, a.v), _mm256_setzero_pd(), _CMP_EQ_OQ); }
inline D4 select(__m256d m, D4 a, D4 b) { return {_mm256_blendv_pd(b.v, a.v, m)}; }
inline __m256d mask_and(__m256d a, __m256d b) { return _mm256_and_pd(a, b); }
inline bool all(__m256d m) { return _mm256_movemask_pd(m) == 0xF; }
inline bool any(__m256d m) { return _mm256_movemask_pd(m) != 0; }
inline double reduce_sum(D4 a) {
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a.v), _mm256_extractf128_pd(a.v, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
template <>
inline F8 load_f16<Isa::avx2>(const std::uint16_t* p) {
  return {_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
}
inline void store_f16(std::uint16_t* p, F8 a) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT));
}
template <>
inline F8 load_bf16<Isa::avx2>(const std::uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return {_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
}
inline __m256i bf16_round_bits(F8 a) {  // 32-bit lanes holding the bf16 bits
  const __m256i bits = _mm256_castps_si256(a.v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  const __m256i quiet_nan = _mm256_or_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(0x40));
  const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(a.v, a.v, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(rounded, quiet_nan, is_nan);
}
inline void store_bf16(std::uint16_t* p, F8 a) {
  const __m256i r = bf16_round_bits(a);
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
}
#endif  // __AVX2__

#if defined(__AVX512F__)
// ---------------------------------------------------------------- avx512
template <>
struct Vec<float, Isa::avx512> {
  using Scalar = float;
  using Mask = __mmask16;
  static constexpr std::size_t width = 16;
  __m512 v;
  static Vec load(const float* p) { return {_mm512_loadu_ps(p)}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  static Vec set1(float x) { return {_mm512_set1_ps(x)}; }
  static Vec zero() { return {_mm512_setzero_ps()}; }
};
template <>
struct Vec<double, Isa::avx512> {
  using Scalar = double;
  using Mask = __mmask8;
  static constexpr std::size_t width = 8;
  __m512d v;
  static Vec load(const double* p) { return {_mm512_loadu_pd(p)}; }
  void store(double* p) const { _mm512_storeu_pd(p, v); }
  static Vec set1(double x) { return {_mm512_set1_pd(x)}; }
  static Vec zero() { return {_mm512_setzero_pd()}; }
};
using F16 = Vec<float, Isa::avx512>;
using D8 = Vec<double, Isa::avx512>;
inline F16 operator+(F16 a, F16 b) { return {_mm512_add_ps(a.v, b.v)}; }
inline F16 operator-(F16 a, F16 b) { return {_mm512_sub_ps(a.v, b.v)}; }
inline F16 operator*(F16 a, F16 b) { return {_mm512_mul_ps(a.v, b.v)}; }
inline F16 operator/(F16 a, F16 b) { return {_mm512_div_ps(a.v, b.v)}; }
inline F16 fma(F16 a, F16 b, F16 c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline F16 sqrt(F16 a) { return {_mm512_sqrt_ps(a.v)}; }
inline F16 min(F16 a, F16 b) { return {_mm512_min_ps(b.v, a.v)}; }
inline F16 max(F16 a, F16 b) { return {_mm512_max_ps(b.v, a.v)}; }
inline F16 abs(F16 a) { return {_mm512_abs_ps(a.v)}; }
inline __mmask16 lt(F16 a, F16 b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_LT_OQ); }
inline __mmask16 le(F16 a, F16 b) { return _mm512_cmp_ps_mask(a.v, b.v, _CMP_LE_OQ); }
inline __mmask16 isfinite(F16 a) { return _mm512_cmp_ps_mask(_mm512_sub_ps(a.v, a.v), _mm512_setzero_ps(), _CMP_EQ_OQ); }
inline F16 select(__mmask16 m, F16 a, F16 b) { return {_mm512_mask_blend_ps(m, b.v, a.v)}; }
inline __mmask16 mask_and(__mmask16 a, __mmask16 b) { return a & b; }
inline bool all(__mmask16 m) { return m == 0xFFFF; }
inline bool any(__mmask16 m) { return m != 0; }
inline float reduce_sum(F16 a) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a.v),
                                 _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a.v), 1)));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline D8 operator+(D8 a, D8 b) { return {_mm512_add_pd(a.v, b.v)}; }
inline D8 operator-(D8 a, D8 b) { return {_mm512_sub_pd(a.v, b.v)}; }
inline D8 operator*(D8 a, D8 b) { return {_mm512_mul_pd(a.v, b.v)}; }
inline D8 operator/(D8 a, D8 b) { return {_mm512_div_pd(a.v, b.v)}; }
inline D8 fma(D8 a, D8 b, D8 c) { return {_mm512_fmadd_pd(a.v, b.v, c.v)}; }
inline D8 sqrt(D8 a) { return {_mm512_sqrt_pd(a.v)}; }
inline D8 min(D8 a, D8 b) { return {_mm512_min_pd(b.v, a.v)}; }
inline D8 max(D8 a, D8 b) { return {_mm512_max_pd(b.v, a.v)}; }
inline D8 abs(D8 a) { return {_mm512_abs_pd(a.v)}; }
inline __mmask8 lt(D8 a, D8 b) { return _mm512_cmp_pd_mask(a.v, b.v, _CMP_LT_OQ); }
inline __mmask8 le(D8 a, D8 b) { return _mm512_cmp_pd_mask(a.v, b.v, _CMP_LE_OQ); }
inline __mmask8 isfinite(D8 a) { return _mm512_cmp_pd_mask(_mm512_sub_pd(a.v, a.v), _mm512_setzero_pd(), _CMP_EQ_OQ); }
inline D8 select(__mmask8 m, D8 a, D8 b) { return {_mm512_mask_blend_pd(m, b.v, a.v)}; }
inline __mmask8 mask_and(__mmask8 a, __mmask8 b) { return a & b; }
inline bool all(__mmask8 m) { return m == 0xFF; }
inline bool any(__mmask8 m) { return m != 0; }
inline double reduce_sum(D8 a) {
  const __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(a.v), _mm512_extractf64x4_pd(a.v, 1));
  __m128d s = _mm_add_pd(_mm256_castpd256_pd128(h), _mm256_extractf128_pd(h, 1));
  return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}
template <>
inline F16 load_f16<Isa::avx512>(const std::uint16_t* p) {
  return {_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
}
inline void store_f16(std::uint16_t* p, F16 a) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(a.v, _MM_FROUND_TO_NEAREST_INT));
}
template <>
inline F16 load_bf16<Isa::avx512>(const std::uint16_t* p) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return {_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
}
inline void store_bf16(std::uint16_t* p, F16 a) {
  const __m512i bits = _mm512_castps_si512(a.v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(a.v, a.v, _CMP_UNORD_Q);
  r = _mm512_mask_or_epi32(r, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
}
#endif  // __AVX512F__

// ------------------------------------------------------- tails, any ISA
// The last k < width elements go through a zero-padded stack copy; this runs
// once per array (or chunk), so its cost does not matter, and it keeps every
// kernel free of a separate scalar tail loop with different rounding.
template <class V>
inline V load_partial(const typename V::Scalar* p, std::size_t k) {
  typename V::Scalar tmp[V::width] = {};
  std::memcpy(tmp, p, k * sizeof(*p));
  return V::load(tmp);
}
template <class V>
inline void store_partial(typename V::Scalar* p, std::size_t k, V a) {
  typename V::Scalar tmp[V::width];
  a.store(tmp);
  std::memcpy(p, tmp, k * sizeof(*p));
}

// Scalar conversions for half types (reference semantics of the vector ones).
inline float bf16_to_float(std::uint16_t h) {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline std::uint16_t float_to_bf16(float f) {  // round to nearest even, NaN stays NaN
  std::uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if (std::isnan(f)) return static_cast<std::uint16_t>((bits >> 16) | 0x40);
  return static_cast<std::uint16_t>((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

// IEEE binary16 <-> float, round to nearest even (the semantics of F16C's
// vcvtps2ph with _MM_FROUND_TO_NEAREST_INT), for scalar code.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  std::uint32_t bits;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
    const float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7F800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline std::uint16_t float_to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000);
  x &= 0x7FFFFFFFu;
  if (x >= 0x7F800000u)  // inf or NaN (quieted, payload kept)
    return sign | (x > 0x7F800000u ? static_cast<std::uint16_t>(0x7E00 | ((x >> 13) & 0x3FF)) : 0x7C00);
  if (x >= 0x477FF000u) return sign | 0x7C00;  // >= 65520 rounds to inf
  if (x < 0x38800000u) {                       // below 2^-14: subnormal half
    float a;
    std::memcpy(&a, &x, 4);
    // a * 2^24 is exact; nearbyint rounds half to even in the default mode.
    return sign | static_cast<std::uint16_t>(std::nearbyint(a * 16777216.0f));
  }
  x += 0xFFFu + ((x >> 13) & 1u);
  return sign | static_cast<std::uint16_t>((x >> 13) - (112u << 10));
}

}  // inline namespace SLIMGRAD_TARGET_NAMESPACE
}  // namespace slimgrad::simd
