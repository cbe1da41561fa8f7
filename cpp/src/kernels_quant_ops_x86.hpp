// Per-ISA helpers of the quantization kernels (kernels_quant_simd.hpp: int
// codes; kernels_quant_gguf_simd.hpp: GGUF blocks): rounding modes, the
// stochastic-rounding hash, byte packing and horizontal min/max on
// float-width lanes. Raw AVX2 / AVX-512 intrinsics (Vec has no rounding-mode
// or integer vocabulary), one specialization per ISA, in an anonymous
// namespace so the per-ISA copies never meet at link time. Integer-only work
// uses AVX2 intrinsics in both.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "slimgrad/quant.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

// Per-ISA integer helpers on float-width lanes.
template <Isa I>
struct QOps;

template <>
struct QOps<Isa::avx2> {
  using F = Vec<float, Isa::avx2>;
  using VI = __m256i;
  static F round_even(F t) { return {_mm256_round_ps(t.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  static F trunc(F t) { return {_mm256_round_ps(t.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)}; }
  static F floor(F t) { return {_mm256_round_ps(t.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)}; }
  static F round_away(F t) {
    const __m256 tr = _mm256_round_ps(t.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 sign = _mm256_and_ps(t.v, _mm256_set1_ps(-0.0f));
    const __m256 frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(t.v, tr));
    const __m256 big = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return {_mm256_add_ps(tr, _mm256_and_ps(big, _mm256_or_ps(sign, _mm256_set1_ps(1.0f))))};
  }
  static VI iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static VI set1(std::uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static VI add(VI a, VI b) { return _mm256_add_epi32(a, b); }
  static VI mix(VI x) { return quant::mix32(U32<Isa::avx2>{x}).v; }
  static F uniform(VI lo, quant::StreamKey k) {
    const VI h = mix(_mm256_xor_si256(mix(add(lo, set1(k.k1))), set1(k.k2)));
    return {_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(h, 8)), _mm256_set1_ps(5.9604644775390625e-8f))};
  }
  // Low bytes of the (integral) lanes of t, to 8 bytes at p.
  static void store_bytes(std::uint8_t* p, F t) {
    const __m256i v = _mm256_and_si256(_mm256_cvttps_epi32(t.v), _mm256_set1_epi32(0xFF));
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
  }
  static F load_codes(const std::uint8_t* p, bool is_signed) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return {_mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b))};
  }
  static float hmin(F a) {
    __m128 s = _mm_min_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_min_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_min_ss(s, _mm_movehdup_ps(s)));
  }
  static float hmax(F a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
  // GGUF blocks: 32 values = 4 vectors.
  static unsigned eq_mask(F a, float s) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a.v, _mm256_set1_ps(s), _CMP_EQ_OQ)));
  }
  // 4 vectors of small integral floats (|v| <= 127) -> 32 bytes, in order.
  static void block_bytes(const F* c, std::uint8_t* out) {
    const __m256i a = _mm256_packs_epi32(_mm256_cvttps_epi32(c[0].v), _mm256_cvttps_epi32(c[1].v));
    const __m256i b = _mm256_packs_epi32(_mm256_cvttps_epi32(c[2].v), _mm256_cvttps_epi32(c[3].v));
    const __m256i p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), p);
  }
  // Element k*W + lane of 32 codes (uint8) plus bit (k*W + lane) of qh << 4.
  static F codes5(const std::uint8_t* q, std::uint32_t qh, int k, bool five) {
    __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * k)));
    if (five) {
      const __m256i sh = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 * k));
      const __m256i bit = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(qh)), sh),
                                           _mm256_set1_epi32(1));
      c = _mm256_or_si256(c, _mm256_slli_epi32(bit, 4));
    }
    return {_mm256_cvtepi32_ps(c)};
  }
  static F codes8(const std::uint8_t* q, int k) {
    return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * k))))};
  }
};

#if defined(__AVX512F__)
template <>
struct QOps<Isa::avx512> {
  using F = Vec<float, Isa::avx512>;
  using VI = __m512i;
  static F round_even(F t) { return {_mm512_roundscale_ps(t.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  static F trunc(F t) { return {_mm512_roundscale_ps(t.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)}; }
  static F floor(F t) { return {_mm512_roundscale_ps(t.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)}; }
  static F round_away(F t) {
    const __m512 tr = _mm512_roundscale_ps(t.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 frac = _mm512_abs_ps(_mm512_sub_ps(t.v, tr));
    const __mmask16 big = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512i one = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(t.v), _mm512_set1_epi32(INT32_MIN)),
                                        _mm512_castps_si512(_mm512_set1_ps(1.0f)));
    return {_mm512_mask_add_ps(tr, big, tr, _mm512_castsi512_ps(one))};
  }
  static VI iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  static VI set1(std::uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static VI add(VI a, VI b) { return _mm512_add_epi32(a, b); }
  static VI mix(VI x) { return quant::mix32(U32<Isa::avx512>{x}).v; }
  static F uniform(VI lo, quant::StreamKey k) {
    const VI h = mix(_mm512_xor_si512(mix(add(lo, set1(k.k1))), set1(k.k2)));
    return {_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(h, 8)), _mm512_set1_ps(5.9604644775390625e-8f))};
  }
  static void store_bytes(std::uint8_t* p, F t) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t.v)));
  }
  static F load_codes(const std::uint8_t* p, bool is_signed) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return {_mm512_cvtepi32_ps(is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b))};
  }
  static float hmin(F a) { return _mm512_reduce_min_ps(a.v); }
  static float hmax(F a) { return _mm512_reduce_max_ps(a.v); }
  static unsigned eq_mask(F a, float s) {
    return static_cast<unsigned>(_mm512_cmp_ps_mask(a.v, _mm512_set1_ps(s), _CMP_EQ_OQ));
  }
  static void block_bytes(const F* c, std::uint8_t* out) {  // one 32-byte store: the reload forwards
    const __m128i a = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(c[0].v));
    const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(c[1].v));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_set_m128i(b, a));
  }
  static F codes5(const std::uint8_t* q, std::uint32_t qh, int k, bool five) {
    __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * k)));
    if (five) {
      const __m512i sh = _mm512_add_epi32(iota(), _mm512_set1_epi32(16 * k));
      const __m512i bit = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(qh)), sh),
                                           _mm512_set1_epi32(1));
      c = _mm512_or_si512(c, _mm512_slli_epi32(bit, 4));
    }
    return {_mm512_cvtepi32_ps(c)};
  }
  static F codes8(const std::uint8_t* q, int k) {
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * k))))};
  }
};
#endif

}  // namespace
}  // namespace slimgrad::kernels
