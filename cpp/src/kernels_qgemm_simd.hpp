// int8-activation GEMM micro-kernels (qgemm.hpp), written once for the avx2
// and avx512 units.
//  - VNNI (avx512 unit, cpuid level avx512_vnni): vpdpbusd multiplies 64
//    weight bytes taken as unsigned (16 outputs x 4 k: 8-bit codes xor 0x80
//    = code + 128; 4- to 6-bit codes as stored, code + 8 / 16 / 32; 5 and 6
//    bits: nibble + bit planes, qgemm.hpp) by the signed activation
//    codes (a 4-byte broadcast per row of x) into 16 int32 sums. Each
//    group's sums start at -offset * qsum (the row's code sum over the
//    group), so they end as those of the signed codes (intermediate sums may
//    wrap: int32 adds are modular, the end is exact); then
//    acc = fma(float(sum), scale, acc). A tile is up to 4 rows of x by 4
//    strips (64 outputs, a whole strip task; 16 int32 accumulators) when
//    the codes are bytes, else by 2 strips (8). 4-bit codes: and / shift
//    (5 / 6 bits: and a masked add per bit plane) in registers up to
//    kWidenRows rows of x, else once per strip task into a byte panel
//    (thread-local, 64 x k bytes) shared by all tiles: the panel is bytes,
//    so its tiles take 4 strips too.
//    The way llama.cpp's q4_0 x q8_0 dot product runs (unsigned nibbles,
//    signed activations), with no stored per-weight compensation.
//  - madd (avx2, and avx512 without VNNI): 256-bit vpmaddubsw on |x| and
//    w * sign(x) (vpsignb; codes are in [-127, 127], so pairs stay below
//    2 * 127 * 127 < 2**15 and never saturate), vpmaddwd by 1 into int32.
//    Tiles of up to 2 rows x 1 strip (the 16 ymm registers of AVX2). 5- and
//    6-bit codes (unsigned, code + 16 / 32 <= 63, high bits from the planes
//    by vpshufb + compare) go straight into vpmaddubsw against signed x:
//    two pairs of 63 * 127 still fit int16; sums start at -off * qsum.
//    From 3 rows of x, 4- to 6-bit strips are widened once per strip into
//    unsigned bytes (code + 8 / 16 / 32) that every tile reads as they are.
//  - AMX (avx512 unit, level amx; qgemm::amx_pays chooses it per weight
//    and row count): tdpbssd on the 8-bit codes as stored, tdpbsud on 4-bit
//    codes widened to bytes (code + 8), 2 x 2 tiles of 16 rows x 16 outputs
//    by 64 k; each group's int32 sums go through memory into the same float
//    epilogue as VNNI's.
//  - Asymmetric formats: every group's int32 sums start at zoff * qsum (the
//    row's code sum over the group) and, after the scale's fma, one more fma
//    adds float(qsum) * shift: ggml's q8_1 / q8_K block-sum trick.
//  - Tails: rows of x by smaller tiles; k is padded with zero codes in the
//    packed weight and in the activation buffer; output columns past n are
//    masked (AVX-512) or go through a 16-float buffer (AVX2).
//  - Activation quantization: amax and the non-finite check in one pass,
//    then cvtps2dq (half to even, the MXCSR default, = nearbyint), clamp,
//    narrow to signed bytes; the scalar reference's definitions exactly.
// Every sum is exact, so every level gives the scalar reference's bits.
#pragma once

#include <immintrin.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels_amx_x86.hpp"
#include "slimgrad/qgemm.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
namespace {

using qgemm::Packed;
constexpr std::size_t kS = qgemm::kStrip;

inline std::int32_t load4(const void* p) {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

#if defined(__AVX512F__)
// quantize_row's AVX-512 form, the same codes: four independent maxima (the
// 256-bit loop was one chain of dependent maxima, ~4 cycles per 8 values,
// about a fifth of a 1024 x 384 x 384 product), and a saturating narrow.
inline void quantize_row_512(const float* xr, std::size_t k, std::size_t kpad, std::int8_t* qr, float* xs) {
  const auto lanes = [k](std::size_t j) {  // the valid lanes of the 16 from j
    return k - j >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (k - j)) - 1);
  };
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  __m512 amax[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  __mmask16 bad = 0;
  std::size_t j = 0;
  for (; j + 64 <= k; j += 64)
    for (std::size_t u = 0; u < 4; ++u) {
      const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(xr + j + 16 * u));
      bad |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ);  // NaN or infinity
      amax[u] = _mm512_max_ps(amax[u], a);
    }
  for (; j < k; j += 16) {  // the tail: masked loads (zeros add nothing to a maximum)
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(lanes(j), xr + j));
    bad |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ);
    amax[0] = _mm512_max_ps(amax[0], a);
  }
  const float amax_all =
      _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(amax[0], amax[1]), _mm512_max_ps(amax[2], amax[3])));
  if (bad || amax_all < FLT_MIN) {
    std::memset(qr, 0, kpad);
    *xs = bad ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    return;
  }
  std::memset(qr + k, 0, kpad - k);  // the codes below are all written
  *xs = amax_all / 127.0f;
  const __m512 inv = _mm512_set1_ps(127.0f / amax_all);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  for (j = 0; j < k; j += 16) {
    const __mmask16 m = lanes(j);
    __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + j), inv));
    v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
    _mm512_mask_cvtepi32_storeu_epi8(qr + j, m, v);
  }
}
#endif

inline void quantize_row(const float* xr, std::size_t k, std::size_t kpad, std::int8_t* qr, float* xs) {
#if defined(__AVX512F__)
  quantize_row_512(xr, k, kpad, qr, xs);
#else
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)), big = _mm256_set1_ps(FLT_MAX);
  __m256 amax8 = _mm256_setzero_ps(), bad8 = _mm256_setzero_ps();
  std::size_t j = 0;
  for (; j + 8 <= k; j += 8) {
    const __m256 a = _mm256_and_ps(_mm256_loadu_ps(xr + j), absmask);
    bad8 = _mm256_or_ps(bad8, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));  // NaN or infinity
    amax8 = _mm256_max_ps(amax8, a);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, amax8);
  float amax = 0.0f;
  for (float v : lanes) amax = v > amax ? v : amax;
  bool finite = _mm256_movemask_ps(bad8) == 0;
  for (; j < k; ++j) {
    const float a = std::fabs(xr[j]);
    if (!(a <= FLT_MAX)) finite = false;
    else if (a > amax) amax = a;
  }
  std::memset(qr, 0, kpad);
  if (!finite) {
    *xs = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  if (amax < FLT_MIN) {
    *xs = 0.0f;
    return;
  }
  *xs = amax / 127.0f;
  const float inv = 127.0f / amax;
  const __m256 inv8 = _mm256_set1_ps(inv);
  const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
  for (j = 0; j + 8 <= k; j += 8) {
    __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xr + j), inv8));
    v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(qr + j), _mm_packs_epi16(w16, w16));
  }
  for (; j < k; ++j) {
    float v = std::nearbyint(xr[j] * inv);
    v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
    qr[j] = static_cast<std::int8_t>(v);
  }
#endif
}

// Scale (or shift) of outputs h..h+7 of strip s in group g: per group, or
// the super-block's float times the group's int8 sub-scale (qgemm.hpp).
inline __m256 group_factor8(const Packed& p, const float* f, const std::int8_t* i, std::size_t s, std::size_t g,
                            std::size_t h) {
  if (p.sub == 1) return _mm256_loadu_ps(f + (s * p.n_groups + g) * kS + h);
  const __m256 d = _mm256_loadu_ps(f + (s * (p.n_groups / p.sub) + g / p.sub) * kS + h);
  const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(i + (s * p.n_groups + g) * kS + h));
  return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)));
}

// Bytes of a strip block's nibble vector (bytes h..h+31) with bit `Bit`
// (4 or 5) of 5- / 6-bit codes set from the block's 64-bit mask: the mask's
// 4 bytes spread over 32 (vpshufb, in-lane), each byte tested against its
// bit (llama.cpp's bytes_from_bits_32).
template <int Bit>
inline __m256i plane_bits(const std::uint8_t* mask, std::size_t h) {
  std::uint32_t m;
  std::memcpy(&m, mask + h / 8, 4);
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2,
                                          3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  const __m256i v = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(m)), spread), bit);
  return _mm256_and_si256(_mm256_cmpeq_epi8(v, bit), _mm256_set1_epi8(1 << Bit));
}

// -------------------------------------------------------------- madd path
inline __m256i madd_step(__m256i acc, __m256i w, __m256i xb, __m256i ax, __m256i ones) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(w, xb)), ones));
}

// One 8-k block of a 4- to 6-bit strip (src) as four vectors of bytes:
// lo0 / lo1 = k 0-3 of outputs 0-7 / 8-15, hi0 / hi1 = k 4-7, each in the
// 8-bit layout (output c's 4 bytes at 4c). Unsigned, code + 8 / 16 / 32;
// with Signed, 4 bits as the signed code.
template <int Bits, bool Signed = false>
inline void decode_block(const std::uint8_t* src, __m256i& lo0, __m256i& lo1, __m256i& hi0, __m256i& hi1) {
  const __m256i nib = _mm256_set1_epi8(0x0F);
  const __m256i raw0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
  const __m256i raw1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
  lo0 = _mm256_and_si256(raw0, nib);
  lo1 = _mm256_and_si256(raw1, nib);
  hi0 = _mm256_and_si256(_mm256_srli_epi16(raw0, 4), nib);
  hi1 = _mm256_and_si256(_mm256_srli_epi16(raw1, 4), nib);
  if constexpr (Bits == 4 && Signed) {
    const __m256i eight = _mm256_set1_epi8(8);
    lo0 = _mm256_sub_epi8(lo0, eight);
    lo1 = _mm256_sub_epi8(lo1, eight);
    hi0 = _mm256_sub_epi8(hi0, eight);
    hi1 = _mm256_sub_epi8(hi1, eight);
  } else if constexpr (Bits > 4) {
    lo0 = _mm256_or_si256(lo0, plane_bits<4>(src + 64, 0));
    lo1 = _mm256_or_si256(lo1, plane_bits<4>(src + 64, 32));
    hi0 = _mm256_or_si256(hi0, plane_bits<4>(src + 72, 0));
    hi1 = _mm256_or_si256(hi1, plane_bits<4>(src + 72, 32));
    if constexpr (Bits == 6) {
      lo0 = _mm256_or_si256(lo0, plane_bits<5>(src + 80, 0));
      lo1 = _mm256_or_si256(lo1, plane_bits<5>(src + 80, 32));
      hi0 = _mm256_or_si256(hi0, plane_bits<5>(src + 88, 0));
      hi1 = _mm256_or_si256(hi1, plane_bits<5>(src + 88, 32));
    }
  }
}

// Strip s of a 4- to 6-bit weight decoded once into unsigned bytes (code
// + 8 / 16 / 32, decode_block), in the 8-bit layout: kpad x 16 bytes at out.
template <int Bits>
void widen_strip_madd(const Packed& p, std::size_t s, std::uint8_t* out) {
  constexpr std::size_t block = Bits == 4 ? 64 : 64 + 16 * (Bits - 4);
  const std::uint8_t* src = p.w + s * p.strip_bytes();
  for (std::size_t b = 0; b < p.kpad / 8; ++b) {
    __m256i v[4];
    decode_block<Bits>(src + block * b, v[0], v[1], v[2], v[3]);
    for (int i = 0; i < 4; ++i) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 128 * b + 32 * i), v[i]);
  }
}

// Rows t0.. (MR of them) of x by strip s. wp: the strip's bytes as packed
// (Wide false) or widened by widen_strip_madd (Wide true: unsigned bytes,
// code + off, against signed x, so the sums need qsum as 5 / 6 bits do).
template <int MR, int Bits, bool Wide>
void tile_madd(const Packed& p, const std::uint8_t* wp, const std::int8_t* q, const float* xs,
               const std::int32_t* qsum, std::size_t t0, std::size_t s, const float* bias, float* y) {
  const std::int8_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = q + (t0 + r) * p.kpad;
  const __m256i ones = _mm256_set1_epi16(1);
  constexpr std::size_t kstep = Bits == 8 ? 4 : 8;
  // bytes per block; 5 / 6 bits: unsigned codes (code + off, <= 63) times
  // signed x: |pairs| <= 2 * 63 * 127, two of them still fit int16
  constexpr std::size_t block = Wide ? 128 : Bits == 8 || Bits == 4 ? 64 : 64 + 16 * (Bits - 4);
  constexpr int off = (Bits > 4 && Bits < 8) || (Wide && Bits == 4) ? 1 << (Bits - 1) : 0;
  __m256 facc[MR][2];
  for (int r = 0; r < MR; ++r) facc[r][0] = facc[r][1] = _mm256_setzero_ps();
  for (std::size_t g = 0; g < p.n_groups; ++g) {
    const std::size_t k0 = g * p.group, k1 = k0 + p.group < p.kpad ? k0 + p.group : p.kpad;
    // the sums start at (zoff - off) * qsum (zero for the symmetric 4 / 8 bits)
    __m256i iacc[MR][2];
    for (int r = 0; r < MR; ++r)
      iacc[r][0] = iacc[r][1] = _mm256_set1_epi32(qsum ? (p.zoff - off) * qsum[(t0 + r) * p.n_groups + g] : 0);
    for (std::size_t k = k0; k < k1; k += kstep) {
      const std::uint8_t* src = wp + (k / kstep) * block;
      simd::prefetch_ahead(src, block);  // the strip's stream, as in tile_vnni
      if constexpr (Wide) {
        // two 4-k blocks (8 k; kpad and groups are multiples of 8) summed
        // in int16 before vpmaddwd, as the in-register path does
        const __m256i* v = reinterpret_cast<const __m256i*>(src);
        const __m256i lo0 = _mm256_loadu_si256(v), lo1 = _mm256_loadu_si256(v + 1);
        const __m256i hi0 = _mm256_loadu_si256(v + 2), hi1 = _mm256_loadu_si256(v + 3);
        for (int r = 0; r < MR; ++r) {
          const __m256i xa = _mm256_set1_epi32(load4(xr[r] + k)), xb = _mm256_set1_epi32(load4(xr[r] + k + 4));
          const __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xa), _mm256_maddubs_epi16(hi0, xb));
          const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xa), _mm256_maddubs_epi16(hi1, xb));
          iacc[r][0] = _mm256_add_epi32(iacc[r][0], _mm256_madd_epi16(p0, ones));
          iacc[r][1] = _mm256_add_epi32(iacc[r][1], _mm256_madd_epi16(p1, ones));
        }
      } else if constexpr (kstep == 4) {
        const __m256i raw0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
        const __m256i raw1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
        for (int r = 0; r < MR; ++r) {
          const __m256i xb = _mm256_set1_epi32(load4(xr[r] + k)), ax = _mm256_abs_epi8(xb);
          iacc[r][0] = madd_step(iacc[r][0], raw0, xb, ax, ones);
          iacc[r][1] = madd_step(iacc[r][1], raw1, xb, ax, ones);
        }
      } else {
        __m256i lo0, lo1, hi0, hi1;
        decode_block<Bits, true>(src, lo0, lo1, hi0, hi1);
        for (int r = 0; r < MR; ++r) {
          const __m256i xa = _mm256_set1_epi32(load4(xr[r] + k)), xb = _mm256_set1_epi32(load4(xr[r] + k + 4));
          __m256i p0, p1;
          if constexpr (Bits == 4) {
            // |pairs| <= 2 * 127 * 8: two of them still fit int16
            const __m256i aa = _mm256_abs_epi8(xa), ab = _mm256_abs_epi8(xb);
            p0 = _mm256_add_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(lo0, xa)),
                                  _mm256_maddubs_epi16(ab, _mm256_sign_epi8(hi0, xb)));
            p1 = _mm256_add_epi16(_mm256_maddubs_epi16(aa, _mm256_sign_epi8(lo1, xa)),
                                  _mm256_maddubs_epi16(ab, _mm256_sign_epi8(hi1, xb)));
          } else {
            p0 = _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xa), _mm256_maddubs_epi16(hi0, xb));
            p1 = _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xa), _mm256_maddubs_epi16(hi1, xb));
          }
          iacc[r][0] = _mm256_add_epi32(iacc[r][0], _mm256_madd_epi16(p0, ones));
          iacc[r][1] = _mm256_add_epi32(iacc[r][1], _mm256_madd_epi16(p1, ones));
        }
      }
    }
    const __m256 sc0 = group_factor8(p, p.scale, p.iscale, s, g, 0);
    const __m256 sc1 = group_factor8(p, p.scale, p.iscale, s, g, 8);
    for (int r = 0; r < MR; ++r) {
      facc[r][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][0]), sc0, facc[r][0]);
      facc[r][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][1]), sc1, facc[r][1]);
    }
    if (p.shift) {
      const __m256 sh0 = group_factor8(p, p.shift, p.ishift, s, g, 0);
      const __m256 sh1 = group_factor8(p, p.shift, p.ishift, s, g, 8);
      for (int r = 0; r < MR; ++r) {
        const __m256 qs = _mm256_set1_ps(static_cast<float>(qsum[(t0 + r) * p.n_groups + g]));
        facc[r][0] = _mm256_fmadd_ps(qs, sh0, facc[r][0]);
        facc[r][1] = _mm256_fmadd_ps(qs, sh1, facc[r][1]);
      }
    }
  }
  const std::size_t n0 = s * kS, valid = p.n - n0 < kS ? p.n - n0 : kS;
  for (int r = 0; r < MR; ++r) {
    const __m256 xsv = _mm256_set1_ps(xs[t0 + r]);
    float out[kS];
    _mm256_storeu_ps(out, _mm256_mul_ps(facc[r][0], xsv));
    _mm256_storeu_ps(out + 8, _mm256_mul_ps(facc[r][1], xsv));
    float* yr = y + (t0 + r) * p.n + n0;
    for (std::size_t c = 0; c < valid; ++c) yr[c] = bias ? out[c] + bias[n0 + c] : out[c];
  }
}

template <int Bits, bool Wide>
void strips_madd_bits(const Packed& p, const std::int8_t* q, const float* xs, const std::int32_t* qsum,
                      std::size_t m, std::size_t s0, std::size_t s1, const float* bias, float* y) {
  thread_local std::vector<std::uint8_t> wide;
  if (Wide && wide.size() < p.kpad * kS) wide.resize(p.kpad * kS);
  for (std::size_t s = s0; s < s1; ++s) {
    const std::uint8_t* wp = p.w + s * p.strip_bytes();
    if constexpr (Wide) {
      widen_strip_madd<Bits>(p, s, wide.data());
      wp = wide.data();
    }
    std::size_t t = 0;
    for (; t + 2 <= m; t += 2) tile_madd<2, Bits, Wide>(p, wp, q, xs, qsum, t, s, bias, y);
    if (t < m) tile_madd<1, Bits, Wide>(p, wp, q, xs, qsum, t, s, bias, y);
  }
}

// 4- to 6-bit strips are decoded in registers by every tile (2 rows of x)
// up to kWidenMaddRows rows, else once per strip into unsigned bytes that
// go straight into vpmaddubsw, two 4-k blocks summed in int16 (level avx2
// on the Intel Xeon VM, 4096 x 4096, 1 thread, batch 64: W4A8 g32 17.3 ->
// 11.5 ms, Q4_K 20.7 -> 15.1, Q6_K 34.5 -> 16.0; batch 3: Q6_K 2.0-2.2 ->
// 1.5 ms).
template <Isa I>
void strips_madd(const Packed& p, const std::int8_t* q, const float* xs, const std::int32_t* qsum, std::size_t m,
                 std::size_t s0, std::size_t s1, const float* bias, float* y) {
  const bool wide = m > qgemm::kWidenMaddRows;
  switch (p.bits) {
    case 8: return strips_madd_bits<8, false>(p, q, xs, qsum, m, s0, s1, bias, y);
    case 6: return wide ? strips_madd_bits<6, true>(p, q, xs, qsum, m, s0, s1, bias, y)
                        : strips_madd_bits<6, false>(p, q, xs, qsum, m, s0, s1, bias, y);
    case 5: return wide ? strips_madd_bits<5, true>(p, q, xs, qsum, m, s0, s1, bias, y)
                        : strips_madd_bits<5, false>(p, q, xs, qsum, m, s0, s1, bias, y);
    default: return wide ? strips_madd_bits<4, true>(p, q, xs, qsum, m, s0, s1, bias, y)
                         : strips_madd_bits<4, false>(p, q, xs, qsum, m, s0, s1, bias, y);
  }
}

#if defined(__AVX512F__)
// -------------------------------------------------------------- VNNI path
inline __m512 group_factor16(const Packed& p, const float* f, const std::int8_t* i, std::size_t s, std::size_t g) {
  if (p.sub == 1) return _mm512_loadu_ps(f + (s * p.n_groups + g) * kS);
  const __m512 d = _mm512_loadu_ps(f + (s * (p.n_groups / p.sub) + g / p.sub) * kS);
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(i + (s * p.n_groups + g) * kS));
  return _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b)));
}

using simd::dpbusd;  // inline asm: GCC's builtin spilled the tiles' sums

// How a strip's weight bytes enter vpdpbusd as unsigned values u = code + Off.
enum class Wt {
  int8,    // 8-bit codes, flipped by xor 0x80 (Off 128)
  nib,     // packed nibbles (Off 8): and / shift in registers
  plane5,  // nibbles + one bit plane (Off 16): a masked vpaddb sets bit 4
  plane6,  // nibbles + two bit planes (Off 32): bits 4 and 5
  wide,    // 4- to 6-bit codes widened to one byte each by widen_strips (Off 8 / 16 / 32)
};

// Low and high nibble vectors of a 4- to 6-bit block (64 + 16 per plane bytes).
template <Wt W>
inline void split_block(const std::uint8_t* src, __m512i& lo, __m512i& hi) {
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const __m512i raw = _mm512_loadu_si512(src);
  lo = _mm512_and_si512(raw, nib);
  hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), nib);
  if constexpr (W == Wt::plane5 || W == Wt::plane6) {
    constexpr int planes = W == Wt::plane5 ? 1 : 2;
    for (int b = 0; b < planes; ++b) {
      std::uint64_t ml, mh;
      std::memcpy(&ml, src + 64 + 16 * b, 8);
      std::memcpy(&mh, src + 72 + 16 * b, 8);
      const __m512i bit = _mm512_set1_epi8(static_cast<char>(16 << b));
      // one masked add per plane: + 16 (32) where the mask bit is set
      lo = _mm512_mask_add_epi8(lo, _cvtu64_mask64(ml), lo, bit);
      hi = _mm512_mask_add_epi8(hi, _cvtu64_mask64(mh), hi, bit);
    }
  }
}

// One k step (4 k; 8 for the split layouts) of MR rows of x by NV strips
// (wp), weight block at byte `at`, into the sums acc.
template <int MR, int NV, Wt W>
__attribute__((target("avx512vnni"), always_inline)) inline void vnni_step(const std::uint8_t* const* wp,
                                                                           std::size_t at,
                                                                           const std::int8_t* const* xr,
                                                                           std::size_t k, __m512i (&acc)[MR][NV]) {
  if constexpr (W == Wt::int8 || W == Wt::wide) {
    __m512i wv[NV];
    for (int v = 0; v < NV; ++v) {
      wv[v] = _mm512_loadu_si512(wp[v] + at);
      if constexpr (W == Wt::int8) wv[v] = _mm512_xor_si512(wv[v], _mm512_set1_epi8(static_cast<char>(0x80)));
    }
    for (int r = 0; r < MR; ++r) {
      const __m512i xb = _mm512_set1_epi32(load4(xr[r] + k));
      for (int v = 0; v < NV; ++v) acc[r][v] = dpbusd(acc[r][v], wv[v], xb);
    }
  } else {
    __m512i lo[NV], hi[NV];
    for (int v = 0; v < NV; ++v) split_block<W>(wp[v] + at, lo[v], hi[v]);
    for (int r = 0; r < MR; ++r) {
      const __m512i xa = _mm512_set1_epi32(load4(xr[r] + k)), xb = _mm512_set1_epi32(load4(xr[r] + k + 4));
      for (int v = 0; v < NV; ++v) {
        acc[r][v] = dpbusd(acc[r][v], lo[v], xa);
        acc[r][v] = dpbusd(acc[r][v], hi[v], xb);
      }
    }
  }
}

// ws: strip s's codes, sb: bytes from one strip to the next.
template <int MR, int NV, Wt W>
__attribute__((target("avx512vnni"))) void tile_vnni(const Packed& p, const std::uint8_t* ws, std::size_t sb,
                                                     const std::int8_t* q, const float* xs,
                                                     const std::int32_t* qsum, std::size_t t0, std::size_t s,
                                                     const float* bias, float* y) {
  const std::uint8_t* wp[NV];
  for (int v = 0; v < NV; ++v) wp[v] = ws + v * sb;
  const std::int8_t* xr[MR];
  for (int r = 0; r < MR; ++r) xr[r] = q + (t0 + r) * p.kpad;
  constexpr bool split = W == Wt::nib || W == Wt::plane5 || W == Wt::plane6;
  constexpr std::size_t kstep = split ? 8 : 4;
  constexpr std::size_t block = W == Wt::plane5 ? 80 : W == Wt::plane6 ? 96 : 64;
  const int off = W == Wt::int8 ? 128 : 1 << (p.bits - 1);
  __m512 facc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) facc[r][v] = _mm512_setzero_ps();
  // Fewer than 3 rows leave too few independent sums to cover vpdpbusd's
  // latency (5 cycles; 2 per 5 cycles at one row of x): U sets of sums take
  // the k steps in turn and are added at the group's end (integers: the
  // same sums, the same bits). W8A8 at one row, 1 thread: 1536x384 10.4 ->
  // 6.3 us, 384x384 4.1 -> 3.7. The split layouts, bound by their unpacking,
  // gained nothing (W4A8 1536x384 7.5 us with 1 or 2 sets).
  constexpr int U = split ? 1 : MR == 1 ? 4 : MR == 2 ? 2 : 1;
  for (std::size_t g = 0; g < p.n_groups; ++g) {
    const std::size_t k0 = g * p.group, k1 = k0 + p.group < p.kpad ? k0 + p.group : p.kpad;
    // the sums start at (zoff - off) * qsum: those of code + zoff at the end
    __m512i acc[U][MR][NV];
    for (int r = 0; r < MR; ++r) {
      const __m512i start = _mm512_set1_epi32((p.zoff - off) * qsum[(t0 + r) * p.n_groups + g]);
      for (int v = 0; v < NV; ++v) {
        acc[0][r][v] = start;
        for (int u = 1; u < U; ++u) acc[u][r][v] = _mm512_setzero_si512();
      }
    }
    std::size_t k = k0;
    for (; k + U * kstep <= k1; k += U * kstep)  // U steps, one per set of sums
      for (int u = 0; u < U; ++u) {
        // every strip's stream 2 KiB ahead: weights read from memory (a model's
        // decoding step) otherwise arrive too late (docs/quant.md)
        for (int v = 0; v < NV; ++v) simd::prefetch_ahead(wp[v] + (k / kstep + u) * block, block);
        vnni_step<MR, NV, W>(wp, (k / kstep + u) * block, xr, k + u * kstep, acc[u]);
      }
    for (; k < k1; k += kstep) vnni_step<MR, NV, W>(wp, (k / kstep) * block, xr, k, acc[0]);
    __m512i iacc[MR][NV];
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) {
        iacc[r][v] = acc[0][r][v];
        for (int u = 1; u < U; ++u) iacc[r][v] = _mm512_add_epi32(iacc[r][v], acc[u][r][v]);
      }
    for (int v = 0; v < NV; ++v) {
      const __m512 sc = group_factor16(p, p.scale, p.iscale, s + v, g);
      for (int r = 0; r < MR; ++r) facc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[r][v]), sc, facc[r][v]);
      if (p.shift) {
        const __m512 sh = group_factor16(p, p.shift, p.ishift, s + v, g);
        for (int r = 0; r < MR; ++r)
          facc[r][v] = _mm512_fmadd_ps(_mm512_set1_ps(static_cast<float>(qsum[(t0 + r) * p.n_groups + g])), sh,
                                       facc[r][v]);
      }
    }
  }
  for (int v = 0; v < NV; ++v) {
    const std::size_t n0 = (s + v) * kS, valid = p.n - n0 < kS ? p.n - n0 : kS;
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
    const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
    for (int r = 0; r < MR; ++r) {
      __m512 out = _mm512_mul_ps(facc[r][v], _mm512_set1_ps(xs[t0 + r]));
      if (bias) out = _mm512_add_ps(out, b);
      _mm512_mask_storeu_ps(y + (t0 + r) * p.n + n0, mask, out);
    }
  }
}

template <int NV, Wt W>
void rows_vnni(const Packed& p, const std::uint8_t* ws, std::size_t sb, const std::int8_t* q, const float* xs,
               const std::int32_t* qsum, std::size_t m, std::size_t s, const float* bias, float* y) {
  std::size_t t = 0;
  for (; t + 4 <= m; t += 4) tile_vnni<4, NV, W>(p, ws, sb, q, xs, qsum, t, s, bias, y);
  switch (m - t) {
    case 3: tile_vnni<3, NV, W>(p, ws, sb, q, xs, qsum, t, s, bias, y); break;
    case 2: tile_vnni<2, NV, W>(p, ws, sb, q, xs, qsum, t, s, bias, y); break;
    case 1: tile_vnni<1, NV, W>(p, ws, sb, q, xs, qsum, t, s, bias, y); break;
    default: break;
  }
}

// 4- to 6-bit strips as one byte per code (code + 8 / 16 / 32, the 8-bit
// layout): with more than one tile of rows, unpacking once per strip beats
// doing it in every tile.
template <Wt W>
void widen_strips(const Packed& p, std::size_t s, std::size_t count, std::uint8_t* out) {
  constexpr std::size_t block = W == Wt::plane5 ? 80 : W == Wt::plane6 ? 96 : 64;
  const std::size_t blocks = p.kpad / 8;
  for (std::size_t v = 0; v < count; ++v) {
    const std::uint8_t* src = p.w + (s + v) * p.strip_bytes();
    std::uint8_t* dst = out + v * p.kpad * kS;
    for (std::size_t b = 0; b < blocks; ++b) {
      __m512i lo, hi;
      split_block<W>(src + block * b, lo, hi);
      _mm512_storeu_si512(dst + 128 * b, lo);
      _mm512_storeu_si512(dst + 128 * b + 64, hi);
    }
  }
}

template <Wt W>
void strips_vnni_split(const Packed& p, const std::int8_t* q, const float* xs, const std::int32_t* qsum,
                       std::size_t m, std::size_t s0, std::size_t s1, const float* bias, float* y) {
  const std::size_t sb = p.strip_bytes();
  if (m > qgemm::kWidenRows) {
    thread_local std::vector<std::uint8_t> wide;
    const std::size_t sb8 = p.kpad * kS;
    if (wide.size() < 4 * sb8) wide.resize(4 * sb8);
    if (s1 - s0 == 4) {  // bytes: tiles of 4 strips, as the 8-bit codes'
      widen_strips<W>(p, s0, 4, wide.data());
      return rows_vnni<4, Wt::wide>(p, wide.data(), sb8, q, xs, qsum, m, s0, bias, y);
    }
    for (std::size_t s = s0; s < s1; s += 2) {
      const std::size_t nv = s1 - s < 2 ? 1 : 2;
      widen_strips<W>(p, s, nv, wide.data());
      nv == 2 ? rows_vnni<2, Wt::wide>(p, wide.data(), sb8, q, xs, qsum, m, s, bias, y)
              : rows_vnni<1, Wt::wide>(p, wide.data(), sb8, q, xs, qsum, m, s, bias, y);
    }
    return;
  }
  std::size_t s = s0;
  for (; s + 2 <= s1; s += 2) rows_vnni<2, W>(p, p.w + s * sb, sb, q, xs, qsum, m, s, bias, y);
  if (s < s1) rows_vnni<1, W>(p, p.w + s * sb, sb, q, xs, qsum, m, s, bias, y);
}

void strips_vnni(const Packed& p, const std::int8_t* q, const float* xs, const std::int32_t* qsum, std::size_t m,
                 std::size_t s0, std::size_t s1, const float* bias, float* y) {
  switch (p.bits) {
    case 4: return strips_vnni_split<Wt::nib>(p, q, xs, qsum, m, s0, s1, bias, y);
    case 5: return strips_vnni_split<Wt::plane5>(p, q, xs, qsum, m, s0, s1, bias, y);
    case 6: return strips_vnni_split<Wt::plane6>(p, q, xs, qsum, m, s0, s1, bias, y);
    default: break;
  }
  const std::size_t sb = p.strip_bytes();
  std::size_t s = s0;
  // 4 strips: 16 sums per 4 broadcasts of x; 4096 x 4096 at batch 64, one
  // thread, Zen 5: 2.95-3.12 ms with 2 strips, 2.43-2.71 with 4 (vpdpbusd
  // issues 2 per cycle at a latency of 4 there: 8 chains of sums only just
  // cover it, with the loads and broadcasts between them)
  if (s1 - s0 == 4) return rows_vnni<4, Wt::int8>(p, p.w + s * sb, sb, q, xs, qsum, m, s, bias, y);
  for (; s + 2 <= s1; s += 2) rows_vnni<2, Wt::int8>(p, p.w + s * sb, sb, q, xs, qsum, m, s, bias, y);
  if (s < s1) rows_vnni<1, Wt::int8>(p, p.w + s * sb, sb, q, xs, qsum, m, s, bias, y);
}

// -------------------------------------------------------------- AMX path
// Tiles (kernels_amx_x86.hpp): 0-3 int32 sums (rows t0.. and t0+16.. of x
// by strips s and s+1), 4-5 activation codes (16 rows x 64 k, stride kpad),
// 6-7 weights (64 k x 16 outputs). A strip's packed bytes (16 outputs x 4 k
// per 64 bytes) are the layout tdpbssd / tdpbsud take as their second
// operand, so tiles load straight from the packed weight. The group's start
// value (zoff - off) * qsum is added when the sums leave the tiles: the same
// exact int32 sums as VNNI's, so the same epilogue gives the same bits.

// One block of up to 32 rows of x (MA tiles of 16) by NV strips, symmetric
// codes (no shift; one float scale per group). Signed: 8-bit codes as
// stored (tdpbssd, off 0); else unsigned bytes code + off (tdpbsud).
// ws[v]: strip v's codes with rows of 64 bytes; tail[v]: the last short k
// step's rows, zero-padded to 16 rows (null when there is none).
template <int MA, int NV, bool Signed>
__attribute__((target("amx-tile,amx-int8"))) void block_amx(const Packed& p, const std::uint8_t* const* ws,
                                                            const std::uint8_t* const* tail, int off,
                                                            const std::int8_t* q, const float* xs,
                                                            const std::int32_t* qsum, std::size_t t0,
                                                            std::size_t mr, std::size_t s, const float* bias,
                                                            float* y) {
  alignas(64) std::int32_t sums[4][16][16];
  alignas(64) float facc[32][NV][16];
  const long lda = static_cast<long>(p.kpad);
  const std::int8_t* a0 = q + t0 * p.kpad;
  const std::int8_t* a1 = a0 + 16 * p.kpad;
  for (std::size_t g = 0; g < p.n_groups; ++g) {
    const std::size_t k0 = g * p.group, k1 = k0 + p.group < p.kpad ? k0 + p.group : p.kpad;
    amx_zero_sums<MA, NV>();
    for (std::size_t k = k0; k < k1; k += kAmxK) {
      const bool short_step = k + kAmxK > p.kpad;
      amx_step<MA, NV, Signed>(a0 + k, a1 + k, lda, short_step ? tail[0] : ws[0] + k * 16,
                               short_step ? tail[1] : ws[1] + k * 16, 64);
    }
    amx_store_sums<MA, NV>(sums);
    // float accumulators in memory (64 vectors do not fit the registers);
    // the last group's go straight to y
    const bool first = g == 0, last = g + 1 == p.n_groups;
    for (int v = 0; v < NV; ++v) {
      const __m512 sc = group_factor16(p, p.scale, p.iscale, s + v, g);
      const std::size_t n0 = (s + v) * kS, valid = p.n - n0 < kS ? p.n - n0 : kS;
      const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
      const __m512 b = bias && last ? _mm512_maskz_loadu_ps(mask, bias + n0) : _mm512_setzero_ps();
      for (std::size_t r = 0; r < mr; ++r) {
        const std::int32_t qs = qsum ? qsum[(t0 + r) * p.n_groups + g] : 0;
        const __m512i sum = _mm512_add_epi32(_mm512_load_si512(sums[(r / 16) * 2 + v][r % 16]),
                                             _mm512_set1_epi32((p.zoff - off) * qs));
        const __m512 acc =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), sc, first ? _mm512_setzero_ps() : _mm512_load_ps(facc[r][v]));
        if (!last) {
          _mm512_store_ps(facc[r][v], acc);
          continue;
        }
        __m512 out = _mm512_mul_ps(acc, _mm512_set1_ps(xs[t0 + r]));
        if (bias) out = _mm512_add_ps(out, b);
        _mm512_mask_storeu_ps(y + (t0 + r) * p.n + n0, mask, out);
      }
    }
  }
}

template <int NV, bool Signed>
void rows_amx(const Packed& p, const std::uint8_t* const* ws, const std::uint8_t* const* tail, int off,
              const std::int8_t* q, const float* xs, const std::int32_t* qsum, std::size_t m, std::size_t s,
              const float* bias, float* y) {
  for (std::size_t t = 0; t < m; t += 32) {
    const std::size_t mr = m - t < 32 ? m - t : 32;
    if (mr > 16) block_amx<2, NV, Signed>(p, ws, tail, off, q, xs, qsum, t, mr, s, bias, y);
    else block_amx<1, NV, Signed>(p, ws, tail, off, q, xs, qsum, t, mr, s, bias, y);
  }
}

// Pairs of strips: 8-bit codes straight from the packed weight, 4-bit
// codes widened to bytes once per pair (widen_strips) for all rows of x.
template <Wt W>
__attribute__((target("amx-tile,amx-int8"))) void strips_amx(const Packed& p, const std::int8_t* q, const float* xs,
                                                             const std::int32_t* qsum, std::size_t m,
                                                             std::size_t s0, std::size_t s1, const float* bias,
                                                             float* y) {
  constexpr bool Signed = W == Wt::int8;
  const int off = Signed ? 0 : 1 << (p.bits - 1);
  const std::size_t sb = Signed ? p.strip_bytes() : p.kpad * kS;
  thread_local std::vector<std::uint8_t> wide;
  if (!Signed && wide.size() < 2 * sb) wide.resize(2 * sb);
  // the last k step may be short (kpad not a multiple of 64): its weight
  // rows go through a zero-padded copy, so the tile's extra activation bytes
  // (the next row's codes, or the buffer's slack) meet zero weights
  const std::size_t last_group = (p.n_groups - 1) * p.group;
  const std::size_t last = last_group + (p.kpad - last_group - 1) / kAmxK * kAmxK;  // start of the last k step
  const std::size_t tail_bytes = p.kpad > last ? (p.kpad - last) * 16 : 0;
  alignas(64) std::uint8_t tails[2][16 * 64];
  amx_configure();
  for (std::size_t s = s0; s < s1; s += 2) {
    const int nv = s1 - s < 2 ? 1 : 2;
    const std::uint8_t* base = p.w + s * sb;
    if constexpr (!Signed) {
      widen_strips<W>(p, s, nv, wide.data());
      base = wide.data();
    }
    const std::uint8_t* ws[2] = {base, base + sb};
    const std::uint8_t* tail[2] = {nullptr, nullptr};
    if (last + kAmxK > p.kpad)
      for (int v = 0; v < nv; ++v) {
        std::memset(tails[v], 0, sizeof tails[v]);
        std::memcpy(tails[v], ws[v] + last * 16, tail_bytes);
        tail[v] = tails[v];
      }
    amx_fence();  // wide, tails
    nv == 2 ? rows_amx<2, Signed>(p, ws, tail, off, q, xs, qsum, m, s, bias, y)
            : rows_amx<1, Signed>(p, ws, tail, off, q, xs, qsum, m, s, bias, y);
  }
  _tile_release();
}
#endif

}  // namespace

template <Isa I>
void qgemm_quantize_rows(const float* x, std::size_t k, std::size_t kpad, std::size_t r0, std::size_t r1,
                         std::int8_t* q, float* xs) {
  for (std::size_t r = r0; r < r1; ++r) quantize_row(x + r * k, k, kpad, q + r * kpad, xs + r);
}

template <Isa I>
void qgemm_strips(const Packed& p, const std::int8_t* q, const float* xs, const std::int32_t* qsum, std::size_t m,
                  std::size_t s0, std::size_t s1, qgemm::Dot dot, const float* bias, float* y) {
#if defined(__AVX512F__)
  if (dot == qgemm::Dot::amx) {
    // qgemm::amx_pays: symmetric 8- and 4-bit codes only
    return p.bits == 4 ? strips_amx<Wt::nib>(p, q, xs, qsum, m, s0, s1, bias, y)
                       : strips_amx<Wt::int8>(p, q, xs, qsum, m, s0, s1, bias, y);
  }
  if (dot == qgemm::Dot::vnni) return strips_vnni(p, q, xs, qsum, m, s0, s1, bias, y);
#endif
  (void)dot;
  strips_madd<I>(p, q, xs, qsum, m, s0, s1, bias, y);
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void qgemm_quantize_rows<SLIMGRAD_UNIT_ISA>(const float*, std::size_t, std::size_t, std::size_t,
                                                     std::size_t, std::int8_t*, float*);
template void qgemm_strips<SLIMGRAD_UNIT_ISA>(const qgemm::Packed&, const std::int8_t*, const float*,
                                              const std::int32_t*, std::size_t, std::size_t, std::size_t, qgemm::Dot,
                                              const float*, float*);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
