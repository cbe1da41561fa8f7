// GGUF block quantization (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) written once for
// avx2 and avx512, instantiated by the per-ISA units the build generates
// (CMakeLists.txt: the area "quant_gguf exact"). It computes the bytes of the
// oracle, gguf_quantize<Isa::scalar> in kernels_quant_scalar.cpp (tests
// compare bytes):
//  - "exact": -ffp-contract=off on its units, like the int codes;
//  - 16 blocks at a time (statistics, then d and 1/d as vector divisions,
//    then codes), degenerate blocks (non-finite d or 1/d) through the oracle;
//    so do blocks where a reduction's order would show in the statistics
//    (ties of +a and -a, signed zeros);
//  - rounding: half away from zero as trunc(t) + sign(t) (QOps::round_away),
//    float16 headers through F16C (round to nearest even);
//  - whole blocks of 32 only (the callers pass a count of blocks).
// Per-ISA helpers: kernels_quant_ops_x86.hpp.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "kernels_quant_ops_x86.hpp"
#include "slimgrad/quant.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

// The oracle (kernels_quant_scalar.cpp), called for degenerate blocks.
template <>
void gguf_quantize<Isa::scalar>(int type, const float* x, std::size_t n_blocks, std::uint8_t* out);

// One block of 32 per iteration, the oracle's float32 steps in its order
// (see kernels_quant_scalar.cpp); the per-block scalars (d, 1/d) are plain
// float divisions here too. A block whose 1/d or d is not finite (tiny or
// huge values: NumPy's NaN/inf casts decide its codes) goes to the oracle.
namespace {

inline void put_half_f16c(std::uint8_t* p, float v) {
  const int h = _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT), 0);
  const auto u = static_cast<std::uint16_t>(h);
  std::memcpy(p, &u, 2);
}
inline float get_half_f16c(const std::uint8_t* p) {
  std::uint16_t u;
  std::memcpy(&u, p, 2);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u)));
}

#if defined(__AVX512F__)
// Lane b: the maximum (Max) or minimum of the 16 lanes of a[b], for 16
// vectors at once in four levels of pairwise shuffles (45 operations for 16
// blocks, where a horizontal reduction per block takes about 8 each and
// its latency chain).
template <bool Max>
inline __m512 reduce16(const __m512* a) {
  const auto op = [](__m512 x, __m512 y) { return Max ? _mm512_max_ps(x, y) : _mm512_min_ps(x, y); };
  __m512 r1[8], r2[4], r3[2];
  for (int i = 0; i < 8; ++i)  // 256-bit halves: blocks 2i, 2i + 1
    r1[i] = op(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
               _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  for (int i = 0; i < 4; ++i)  // 128-bit quarter q: block 4i + q
    r2[i] = op(_mm512_shuffle_f32x4(r1[2 * i], r1[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
               _mm512_shuffle_f32x4(r1[2 * i], r1[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
  for (int i = 0; i < 2; ++i)  // quarter q, lanes 0-1: block 8i + q, lanes 2-3: block 8i + 4 + q
    r3[i] = op(_mm512_shuffle_ps(r2[2 * i], r2[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
               _mm512_shuffle_ps(r2[2 * i], r2[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 r = op(_mm512_shuffle_ps(r3[0], r3[1], _MM_SHUFFLE(2, 0, 2, 0)),
                      _mm512_shuffle_ps(r3[0], r3[1], _MM_SHUFFLE(3, 1, 3, 1)));
  // Lane 4q + j holds block q + 4j: put block b in lane b.
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), r);
}

// Phase 1 of gguf_blocks_simd for AVX-512: the statistics of nb <= 16
// blocks from per-block max and min vectors reduced together (reduce16).
// Signed zeros and ties are where a reduction's order shows, so those
// blocks are marked for the oracle (`oracle`): max == -min (Q4_0, Q5_0: the
// first largest |x| keeps its sign), a min or max of 0 (Q4_1, Q5_1: the first
// zero's sign reaches the header); Q8_0 needs neither (|x| has no sign).
inline void gguf_stats16(const float* x, std::size_t nb, bool q8, bool sym, float* s1, float* s2, bool* oracle) {
  __m512 a[16];
  for (std::size_t b = 0; b < 16; ++b)
    a[b] = b < nb ? _mm512_max_ps(_mm512_loadu_ps(x + 32 * b), _mm512_loadu_ps(x + 32 * b + 16)) : _mm512_setzero_ps();
  const __m512 hi = reduce16<true>(a);
  for (std::size_t b = 0; b < 16; ++b)
    a[b] = b < nb ? _mm512_min_ps(_mm512_loadu_ps(x + 32 * b), _mm512_loadu_ps(x + 32 * b + 16)) : _mm512_setzero_ps();
  const __m512 lo = reduce16<false>(a);
  const __mmask16 valid = static_cast<__mmask16>((1u << nb) - 1u);
  if (q8) {
    _mm512_store_ps(s1, _mm512_max_ps(_mm512_abs_ps(hi), _mm512_abs_ps(lo)));
    return;
  }
  unsigned exact;  // blocks for the oracle
  if (sym) {
    const __m512 neg_lo = _mm512_sub_ps(_mm512_setzero_ps(), lo);
    const __mmask16 pos = _mm512_cmp_ps_mask(hi, neg_lo, _CMP_GT_OQ), neg = _mm512_cmp_ps_mask(neg_lo, hi, _CMP_GT_OQ);
    _mm512_store_ps(s1, _mm512_mask_blend_ps(neg, hi, lo));
    exact = valid & ~(pos | neg);
  } else {
    _mm512_store_ps(s1, lo);
    _mm512_store_ps(s2, hi);
    exact = valid & (_mm512_cmp_ps_mask(lo, _mm512_setzero_ps(), _CMP_EQ_OQ) |
                     _mm512_cmp_ps_mask(hi, _mm512_setzero_ps(), _CMP_EQ_OQ));
  }
  for (; exact; exact &= exact - 1) oracle[__builtin_ctz(exact)] = true;
}
#endif  // __AVX512F__

// Up to 16 blocks per call, in three phases, so the long per-block chain
// (reduction -> two divisions -> codes) overlaps across blocks:
//  1. per block, the statistic: amax (Q8_0), the signed first largest |x|
//     (Q4_0, Q5_0), or min and max (Q4_1, Q5_1); a block where the order of
//     equal values decides it is marked for the oracle;
//  2. vectorized over the 16 blocks: d, 1/d (0 when d == 0), float16 bits;
//  3. per block: header and codes. A marked block, or one with a non-finite
//     d or 1/d, goes to the oracle (NumPy's NaN/inf casts decide its codes).
template <Isa I>
inline void gguf_blocks_simd(int type, const float* x, std::size_t nb, std::uint8_t* out, std::size_t ts) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr int W = static_cast<int>(V::width), K = 32 / W;
  const auto t = static_cast<quant::GgufType>(type);
  const bool q8 = t == quant::GgufType::q8_0;
  const bool sym = q8 || t == quant::GgufType::q4_0 || t == quant::GgufType::q5_0;
  const bool five = t == quant::GgufType::q5_0 || t == quant::GgufType::q5_1;
  alignas(64) float s1[16] = {}, s2[16] = {}, dv[16], idv[16];
  alignas(64) std::uint16_t hd[16], hm[16];
  bool oracle[16] = {};  // blocks whose statistics need the oracle's order
#if defined(__AVX512F__)
  if constexpr (W == 16) gguf_stats16(x, nb, q8, sym, s1, s2, oracle);
  else
#endif
  for (std::size_t b = 0; b < nb; ++b) {
    const float* xb = x + 32 * b;
    V v[K];
    for (int k = 0; k < K; ++k) v[k] = V::load(xb + k * W);
    if (sym) {
      V a = abs(v[0]);
      for (int k = 1; k < K; ++k) a = max(a, abs(v[k]));
      const float amax = Q::hmax(a);
      if (q8) {
        s1[b] = amax;
      } else {
        std::uint32_t hits = 0;  // first index of the largest |x| (argmax)
        for (int k = 0; k < K; ++k) hits |= Q::eq_mask(abs(v[k]), amax) << (k * W);
        if (hits)
          s1[b] = xb[__builtin_ctz(hits)];
        else
          oracle[b] = true;  // no hit: a NaN
      }
    } else {
      V lo = v[0], hi = v[0];
      for (int k = 1; k < K; ++k) {
        lo = min(lo, v[k]);
        hi = max(hi, v[k]);
      }
      s1[b] = Q::hmin(lo);
      s2[b] = Q::hmax(hi);
      oracle[b] = s1[b] == 0.0f || s2[b] == 0.0f;  // which signed zero came first
    }
  }
  const float div = q8 ? 127.0f : t == quant::GgufType::q4_0 ? -8.0f : t == quant::GgufType::q5_0 ? -16.0f
                  : t == quant::GgufType::q4_1 ? 15.0f : 31.0f;
  for (int i = 0; i < 16; i += W) {
    const V d = (sym ? V::load(s1 + i) : V::load(s2 + i) - V::load(s1 + i)) / V::set1(div);
    const V id = select(le(abs(d), V::zero()), V::zero(), V::set1(1.0f) / d);
    d.store(dv + i);
    id.store(idv + i);
  }
  for (int i = 0; i < 16; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(hd + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(dv + i), _MM_FROUND_TO_NEAREST_INT));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(hm + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(s1 + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (std::size_t b = 0; b < nb; ++b) {
    const float* xb = x + 32 * b;
    std::uint8_t* o = out + ts * b;
    if (oracle[b] || !__builtin_isfinite(idv[b]) || !__builtin_isfinite(dv[b])) {
      gguf_quantize<Isa::scalar>(type, xb, 1, o);
      continue;
    }
    V v[K], c[K];
    for (int k = 0; k < K; ++k) v[k] = V::load(xb + k * W);
    const V vid = V::set1(idv[b]);
    std::memcpy(o, hd + b, 2);
    if (q8) {
      for (int k = 0; k < K; ++k) c[k] = Q::round_away(v[k] * vid);
      Q::block_bytes(c, o + 2);
      continue;
    }
    const V top = V::set1(five ? 31.0f : 15.0f);
    if (sym) {
      const V bias = V::set1(five ? 16.5f : 8.5f);
      for (int k = 0; k < K; ++k) c[k] = min(Q::trunc(v[k] * vid + bias), top);
      o += 2;
    } else {
      const V vmn = V::set1(s1[b]), half = V::set1(0.5f);
      for (int k = 0; k < K; ++k) c[k] = min(Q::trunc((v[k] - vmn) * vid + half), top);
      std::memcpy(o + 2, hm + b, 2);
      o += 4;
    }
    std::uint8_t q[32];
    Q::block_bytes(c, q);
    const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
    if (five) {
      const auto qh = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(qa, 3)));
      std::memcpy(o, &qh, 4);
      o += 4;
    }
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(_mm256_castsi256_si128(qa), m4);
    const __m128i hi = _mm_and_si128(_mm256_extracti128_si256(qa, 1), m4);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
  }
}

template <Isa I>
inline void gguf_unblock_simd(int type, const std::uint8_t* in, float* x) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr int W = static_cast<int>(V::width), K = 32 / W;
  const auto t = static_cast<quant::GgufType>(type);
  const V d = V::set1(get_half_f16c(in));
  if (t == quant::GgufType::q8_0) {
    for (int k = 0; k < K; ++k) (d * Q::codes8(in + 2, k)).store(x + k * W);
    return;
  }
  const bool affine = t == quant::GgufType::q4_1 || t == quant::GgufType::q5_1;
  const bool five = t == quant::GgufType::q5_0 || t == quant::GgufType::q5_1;
  const V m = V::set1(affine ? get_half_f16c(in + 2) : 0.0f);
  const std::uint8_t* p = in + (affine ? 4 : 2);
  std::uint32_t qh = 0;
  if (five) {
    std::memcpy(&qh, p, 4);
    p += 4;
  }
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  std::uint8_t q[32];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm_and_si128(b, _mm_set1_epi8(0x0F)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F)));
  const V off = V::set1(five ? 16.0f : 8.0f);
  for (int k = 0; k < K; ++k) {
    const V c = Q::codes5(q, qh, k, five);
    if (affine)
      (d * c + m).store(x + k * W);
    else
      (d * (c - off)).store(x + k * W);
  }
}

}  // namespace

template <Isa I>
void gguf_quantize(int type, const float* x, std::size_t n_blocks, std::uint8_t* out) {
  const std::size_t ts = quant::gguf_type_size(static_cast<quant::GgufType>(type));
  for (std::size_t b = 0; b < n_blocks; b += 16)
    gguf_blocks_simd<I>(type, x + 32 * b, n_blocks - b < 16 ? n_blocks - b : 16, out + ts * b, ts);
}

template <Isa I>
void gguf_dequantize(int type, const std::uint8_t* in, std::size_t n_blocks, float* out) {
  const std::size_t ts = quant::gguf_type_size(static_cast<quant::GgufType>(type));
  for (std::size_t b = 0; b < n_blocks; ++b) gguf_unblock_simd<I>(type, in + ts * b, out + 32 * b);
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void gguf_quantize<SLIMGRAD_UNIT_ISA>(int, const float*, std::size_t, std::uint8_t*);
template void gguf_dequantize<SLIMGRAD_UNIT_ISA>(int, const std::uint8_t*, std::size_t, float*);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
