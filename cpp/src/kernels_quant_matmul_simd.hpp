// Quantized products written once for avx2 and avx512, instantiated by
// the per-ISA units the build generates (CMakeLists.txt).
//  - GEMV (batch 1), the decoding case: weights streamed once. Codes are
//    widened straight to float lanes and multiplied into x with explicit
//    FMAs; per group y += scale * sum(x * v) - scale * z * sum(x), v the
//    unsigned code (4-bit signed codes are read as u ^ 8 = c + 8, so z is the
//    zero point + 8 there: one XOR per 32 codes instead of a sign extension).
//    x comes pre-arranged per 32-chunk (even then odd elements for 4 bits, so
//    low / high nibbles need no interleaving; zero-padded tails). AVX2 runs
//    two rows at a time (x loaded once); AVX-512 with 4-bit full groups looks
//    the 16 possible weights of a group up with vpermps (no conversions, no
//    per-group term). Float sums differ from the oracle's order: tolerance,
//    not bit identity; each output is computed by one thread in a fixed order.
//  - batched: panels of 2W rows dequantized exactly as dequantize() does,
//    transposed, then register-blocked outer products (2 x BB accumulators).
//  - int8 x int8 -> int32: AVX2 widens both to int16 and uses vpmaddwd
//    (exact for every int8 value, unlike vpmaddubsw's sign trick, which
//    fails for -128 and can saturate); AVX512 with VNNI (cpuid at run time)
//    packs b by blocks of 64 rows into qgemm's strips as b + 128 (unsigned)
//    and runs 4 x 64 tiles of a's signed 4-byte broadcasts, minus
//    128 * sum(a row): exact in int32.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels_amx_x86.hpp"
#include "kernels_quant_ops_x86.hpp"
#include "slimgrad/quant.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

template <Isa I>
struct MOps;

template <>
struct MOps<Isa::avx2> {
  using F = Vec<float, Isa::avx2>;
  // 32 codes at p (16 bytes for 4 bits, 32 for 8) times x chunk xc.
  template <int bits, bool is_signed>
  static void chunk(const std::uint8_t* p, const float* xc, F& ga, F& gb) {
    if constexpr (bits == 4) {
      __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      if constexpr (is_signed) b = _mm_xor_si128(b, _mm_set1_epi8(static_cast<char>(0x88)));
      const __m128i m = _mm_set1_epi8(0x0F);
      const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
      ga.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(lo)), _mm256_loadu_ps(xc), ga.v);
      gb.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8))), _mm256_loadu_ps(xc + 8), gb.v);
      ga.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(hi)), _mm256_loadu_ps(xc + 16), ga.v);
      gb.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))), _mm256_loadu_ps(xc + 24), gb.v);
    } else {
      for (int k = 0; k < 4; k += 2) {
        const __m128i b0 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * k));
        const __m128i b1 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * k + 8));
        const __m256i c0 = is_signed ? _mm256_cvtepi8_epi32(b0) : _mm256_cvtepu8_epi32(b0);
        const __m256i c1 = is_signed ? _mm256_cvtepi8_epi32(b1) : _mm256_cvtepu8_epi32(b1);
        ga.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c0), _mm256_loadu_ps(xc + 8 * k), ga.v);
        gb.v = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c1), _mm256_loadu_ps(xc + 8 * k + 8), gb.v);
      }
    }
  }
};

#if defined(__AVX512F__)
template <>
struct MOps<Isa::avx512> {
  using F = Vec<float, Isa::avx512>;
  template <int bits, bool is_signed>
  static void chunk(const std::uint8_t* p, const float* xc, F& ga, F& gb) {
    if constexpr (bits == 4) {
      __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      if constexpr (is_signed) b = _mm_xor_si128(b, _mm_set1_epi8(static_cast<char>(0x88)));
      const __m128i m = _mm_set1_epi8(0x0F);
      const __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
      ga.v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), _mm512_loadu_ps(xc), ga.v);
      gb.v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), _mm512_loadu_ps(xc + 16), gb.v);
    } else {
      const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16));
      const __m512i c0 = is_signed ? _mm512_cvtepi8_epi32(b0) : _mm512_cvtepu8_epi32(b0);
      const __m512i c1 = is_signed ? _mm512_cvtepi8_epi32(b1) : _mm512_cvtepu8_epi32(b1);
      ga.v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c0), _mm512_loadu_ps(xc), ga.v);
      gb.v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c1), _mm512_loadu_ps(xc + 16), gb.v);
    }
  }
};
#endif

// Zero-point correction of row r: sum_g s_g * z_g * xsum_g, vectorized over
// groups (z includes the +8 of signed 4-bit codes read as u ^ 8).
template <Isa I, int Bits, bool Signed>
float gemv_corr(const QMatmulArgs& a, std::size_t r) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  constexpr float zoff = (Bits == 4 && Signed) ? 8.0f : 0.0f;
  const float* sc = a.scale + r * a.param_stride;
  const std::int32_t* zp = a.zp + r * a.param_stride;
  float corr = 0.0f;
  if (zoff != 0.0f || !Signed) {
    V cv = V::zero();
    const std::size_t G = a.n_groups;
    std::size_t k = 0;
    if (a.param_stride) {
      for (; k + W <= G; k += W) {
        float z[W];
        for (std::size_t t = 0; t < W; ++t) z[t] = static_cast<float>(zp[k + t]) + zoff;
        cv = fma(V::load(sc + k) * V::load(z), V::load(a.xsum + k), cv);
      }
    }
    for (; k < G; ++k) {
      const std::size_t p = a.param_stride ? k : 0;
      corr += sc[p] * (static_cast<float>(zp[p]) + zoff) * a.xsum[k];
    }
    corr += reduce_sum(cv);
  }
  return corr;
}

template <Isa I, int Bits, bool Signed>
float gemv_row(const QMatmulArgs& a, std::size_t r) {
  using V = Vec<float, I>;
  const std::uint8_t* row = a.w + r * a.row_bytes;
  const std::size_t gs = a.group_size, per_group = (gs + 31) / 32 * 32;
  const float* sc = a.scale + r * a.param_stride;
  // Two accumulators over alternate groups: the per-group scale FMA is a
  // loop-carried chain, which would otherwise bound small groups.
  V acc[2] = {V::zero(), V::zero()};
  std::size_t g = 0;
  if (gs % 32 == 0) {  // full groups: whole 32-chunks, no tail handling
    const std::size_t full = a.in / gs;
    for (; g < full; ++g) {
      const std::uint8_t* src = row + g * gs * Bits / 8;
      const float* xg = a.xp + g * gs;
      V ga = V::zero(), gb = V::zero();
      for (std::size_t c = 0; c < gs; c += 32) {
        if ((g * gs + c) * Bits / 8 % 64 == 0) prefetch(src + c * Bits / 8, kPrefetchAhead);  // once a line
        MOps<I>::template chunk<Bits, Signed>(src + c * Bits / 8, xg + c, ga, gb);
      }
      acc[g & 1] = fma(V::set1(sc[a.param_stride ? g : 0]), ga + gb, acc[g & 1]);
    }
  }
  for (; g < a.n_groups; ++g) {
    const std::size_t j0 = g * gs, len = (a.in - j0 < gs) ? a.in - j0 : gs;
    const float* xg = a.xp + g * per_group;
    V ga = V::zero(), gb = V::zero();
    for (std::size_t c = 0; c < len; c += 32) {
      const std::size_t jc = j0 + c, avail = len - c < 32 ? len - c : 32;
      const std::uint8_t* src = row + jc * Bits / 8;
      std::uint8_t tmp[32];
      if (avail < 32) {
        std::memset(tmp, 0, sizeof tmp);
        std::memcpy(tmp, src, Bits == 4 ? (avail + 1) / 2 : avail);
        src = tmp;
      }
      MOps<I>::template chunk<Bits, Signed>(src, xg + c, ga, gb);
    }
    acc[g & 1] = fma(V::set1(sc[a.param_stride ? g : 0]), ga + gb, acc[g & 1]);
  }
  return reduce_sum(acc[0] + acc[1]) - gemv_corr<I, Bits, Signed>(a, r);
}

#if defined(__AVX512F__)
// AVX-512, 4 bits, every group full (32 | group size): the 16 possible
// weights of a group, scale * (code - zero point), form a table, and
// vpermps looks codes up in it: no int -> float conversion, no per-group
// scale or zero-point term, and the products use exactly dequantize()'s
// weights. vpermps reads the low 4 bits of each index, so the nibbles need
// no masking after widening.
template <bool Signed>
inline __m512 lut_table(const QMatmulArgs& a, std::size_t r, std::size_t g) {
  // nibble n as a code: two's complement when signed (then the zero point is 0)
  const __m512 codes = Signed ? _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1)
                              : _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const std::size_t p = r * a.param_stride + g;
  if constexpr (Signed) return _mm512_mul_ps(_mm512_set1_ps(a.scale[p]), codes);
  return _mm512_mul_ps(_mm512_set1_ps(a.scale[p]), _mm512_sub_ps(codes, _mm512_set1_ps(static_cast<float>(a.zp[p]))));
}

// Rows r0 (and r0 + 1 when two) of y; x chunks are loaded once for both.
template <bool Signed, bool Two>
void gemv_rows_lut(const QMatmulArgs& a, std::size_t r0, float* y) {
  const std::size_t gs = a.group_size, full = a.in / gs;
  const std::uint8_t* w0 = a.w + r0 * a.row_bytes;
  const std::uint8_t* w1 = w0 + a.row_bytes;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  for (std::size_t g = 0; g < full; ++g) {
    const __m512 t0 = lut_table<Signed>(a, r0, g);
    const __m512 t1 = Two ? lut_table<Signed>(a, r0 + 1, g) : t0;
    const std::size_t off = g * gs / 2;
    const float* xg = a.xp + g * gs;
    for (std::size_t c = 0; c < gs; c += 32) {
      if ((off + c / 2) % 64 == 0) {  // once a line: the next pair of rows, at this offset
        prefetch(w0 + off + c / 2, 2 * a.row_bytes);
        if constexpr (Two) prefetch(w1 + off + c / 2, 2 * a.row_bytes);
      }
      const __m512 xe = _mm512_loadu_ps(xg + c), xo = _mm512_loadu_ps(xg + c + 16);
      const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w0 + off + c / 2));
      acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(b0), t0), xe, acc0);
      acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_srli_epi16(b0, 4)), t0), xo, acc1);
      if constexpr (Two) {
        const __m128i b1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w1 + off + c / 2));
        acc2 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(b1), t1), xe, acc2);
        acc3 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_srli_epi16(b1, 4)), t1), xo, acc3);
      }
    }
  }
  y[0] = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  if constexpr (Two) y[1] = _mm512_reduce_add_ps(_mm512_add_ps(acc2, acc3));
}
#endif

// Two rows at once on the fast path (every group full, 32 | group size): x
// chunks are loaded once for both rows and the two rows' chains interleave.
template <Isa I, int Bits, bool Signed>
void gemv_two_rows(const QMatmulArgs& a, std::size_t r, float* y0, float* y1) {
  using V = Vec<float, I>;
  const std::size_t gs = a.group_size, full = a.in / gs;
  const std::uint8_t* w0 = a.w + r * a.row_bytes;
  const std::uint8_t* w1 = w0 + a.row_bytes;
  const float* s0 = a.scale + r * a.param_stride;
  const float* s1 = s0 + a.param_stride;
  V acc0 = V::zero(), acc1 = V::zero();
  for (std::size_t g = 0; g < full; ++g) {
    const std::size_t off = g * gs * Bits / 8;
    const float* xg = a.xp + g * gs;
    V a0 = V::zero(), b0 = V::zero(), a1 = V::zero(), b1 = V::zero();
    for (std::size_t c = 0; c < gs; c += 32) {
      if ((off + c * Bits / 8) % 64 == 0) {  // once a line: the next pair of rows, at this offset
        prefetch(w0 + off + c * Bits / 8, 2 * a.row_bytes);
        prefetch(w1 + off + c * Bits / 8, 2 * a.row_bytes);
      }
      MOps<I>::template chunk<Bits, Signed>(w0 + off + c * Bits / 8, xg + c, a0, b0);
      MOps<I>::template chunk<Bits, Signed>(w1 + off + c * Bits / 8, xg + c, a1, b1);
    }
    acc0 = fma(V::set1(s0[g]), a0 + b0, acc0);
    acc1 = fma(V::set1(s1[g]), a1 + b1, acc1);
  }
  *y0 = reduce_sum(acc0) - gemv_corr<I, Bits, Signed>(a, r);
  *y1 = reduce_sum(acc1) - gemv_corr<I, Bits, Signed>(a, r + 1);
}

// Row r of W as floats, exactly dequantize()'s values.
template <Isa I>
void dequant_row(const QMatmulArgs& a, std::size_t r, float* out) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr std::size_t W = V::width;
  const std::uint8_t* row = a.w + r * a.row_bytes;
  std::uint8_t codes[4096];
  // Pieces of 4096 codes (4-bit ones unpacked once per piece), then each
  // group's scale * (code - zp) in registers, as quant_dequant computes it.
  // Why: a call to unpack and one to dequantize per group of 32 codes cost
  // about what the group's arithmetic does (with the panel's old scalar
  // transpose, 4096 x 4096 int4 at batch 8 took 5.0-5.2 ms, now 2.9-3.6 on
  // Zen 5: docs/quant.md).
  for (std::size_t j = 0; j < a.in; j += 4096) {  // j stays even: pieces start on a byte
    const std::size_t n = a.in - j < 4096 ? a.in - j : 4096;
    const std::uint8_t* src = row + j;
    if (a.bits == 4) {
      quant_unpack<I>(row + j / 2, n, 4, a.is_signed, codes);
      src = codes;
    }
    for (std::size_t i = 0; i < n;) {
      const std::size_t g = (j + i) / a.group_size;
      const std::size_t e = std::min(n, (g + 1) * a.group_size - j);  // the group's end in this piece
      const std::size_t p = r * a.param_stride + g;
      const V vs = V::set1(a.scale[p]), vz = V::set1(static_cast<float>(a.zp[p]));
      for (; i + 16 <= e; i += W) (vs * (Q::load_codes(src + i, a.is_signed) - vz)).store(out + j + i);
      while (i < e) {  // the loads above read 8 (avx2) or 16 (avx512) bytes
        const std::size_t k = e - i < W ? e - i : W;
        std::uint8_t tmp[16] = {};
        float res[W];
        std::memcpy(tmp, src + i, k);
        (vs * (Q::load_codes(tmp, a.is_signed) - vz)).store(res);
        std::memcpy(out + j + i, res, k * sizeof(float));
        i += k;
      }
    }
  }
}

// panel[j * 2W + i] = rows[i * stride + j] for the 2W rows and j < count:
// W x W blocks through registers (a scalar copy per element took as long as
// the products at batch 8: docs/quant.md); a last block narrower than W goes
// through a zero-padded copy.
template <Isa I>
void transpose_panel(const float* rows, std::size_t stride, std::size_t count, float* panel) {
  constexpr std::size_t W = Vec<float, I>::width, PR = 2 * W;
  for (std::size_t j0 = 0; j0 < count; j0 += W) {
    const std::size_t cols = count - j0 < W ? count - j0 : W;
    for (std::size_t h = 0; h < 2; ++h) {
      float pad[W * W];
      const float* src = rows + h * W * stride + j0;
      std::size_t step = stride;
      if (cols < W) {
        std::memset(pad, 0, sizeof pad);
        for (std::size_t i = 0; i < W; ++i) std::memcpy(pad + i * W, src + i * stride, cols * sizeof(float));
        src = pad;
        step = W;
      }
      float* dst = panel + j0 * PR + h * W;
#if defined(__AVX512F__)
      if constexpr (W == 16) {
        __m512i v[16], t[16];
        for (std::size_t i = 0; i < 16; ++i) v[i] = _mm512_castps_si512(_mm512_loadu_ps(src + i * step));
        transpose16(v, t);
        for (std::size_t c = 0; c < cols; ++c) _mm512_storeu_ps(dst + c * PR, _mm512_castsi512_ps(t[c]));
        continue;
      }
#endif
      if constexpr (W == 8) {
        if (cols == W) {
          transpose8x8(src, step, dst, PR);
        } else {  // only the block's first `cols` columns exist in the panel
          float t[W * W];
          transpose8x8(src, step, t, W);
          for (std::size_t c = 0; c < cols; ++c) std::memcpy(dst + c * PR, t + c * W, W * sizeof(float));
        }
      }
    }
  }
}

// Batched: a panel of 2W rows is dequantized (exactly dequantize()'s
// values), transposed so that column j of the panel is 2W consecutive floats,
// then multiplied as outer products: for each j, 2 panel vectors times a
// broadcast x[b, j] for BB rows of x at once (2 * BB accumulators, FMA-bound).
// (Chunks of 256 columns, to keep the panel in L1 while the rows of x pass,
// were slower: 4096 x 4096 at batch 512, 36-38 -> 44-45 ms on Zen 5; the
// rows of x then came in 1 KiB pieces.)
template <Isa I>
void batched_rows(const QMatmulArgs& a, std::size_t r0, std::size_t r1, float* scratch) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width, PR = 2 * W;
  constexpr std::size_t BB = I == Isa::avx512 ? 6 : 4;
  const std::size_t in = a.in;
  float* rows = scratch;
  float* panel = scratch + PR * in;
  for (std::size_t r = r0; r < r1; r += PR) {
    const std::size_t nr = r1 - r < PR ? r1 - r : PR;
    for (std::size_t k = 0; k < nr; ++k) dequant_row<I>(a, r + k, rows + k * in);
    for (std::size_t k = nr; k < PR; ++k) std::memset(rows + k * in, 0, in * sizeof(float));
    transpose_panel<I>(rows, in, in, panel);
    for (std::size_t b = 0; b < a.batch; b += BB) {
      const std::size_t nb = a.batch - b < BB ? a.batch - b : BB;
      const float* xr[BB];
      for (std::size_t t = 0; t < BB; ++t) xr[t] = a.x + (b + (t < nb ? t : nb - 1)) * in;
      V acc[BB][2];
      for (std::size_t t = 0; t < BB; ++t) acc[t][0] = acc[t][1] = V::zero();
      for (std::size_t j = 0; j < in; ++j) {
        const V p0 = V::load(panel + j * PR), p1 = V::load(panel + j * PR + W);
        for (std::size_t t = 0; t < BB; ++t) {
          const V xv = V::set1(xr[t][j]);
          acc[t][0] = fma(xv, p0, acc[t][0]);
          acc[t][1] = fma(xv, p1, acc[t][1]);
        }
      }
      for (std::size_t t = 0; t < nb; ++t) {
        float tmp[PR];
        acc[t][0].store(tmp);
        acc[t][1].store(tmp + W);
        std::memcpy(a.y + (b + t) * a.out + r, tmp, nr * sizeof(float));
      }
    }
  }
}

inline std::int32_t hsum256(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

void s8_madd(const std::int8_t* a, std::size_t M, const std::int8_t* b, std::size_t K, std::size_t n0,
             std::size_t n1, std::int32_t* c, std::size_t N, std::int16_t* bw) {
  for (std::size_t n = n0; n < n1; n += 4) {
    const std::size_t nn = n1 - n < 4 ? n1 - n : 4;
    for (std::size_t i = 0; i < 4; ++i)
      for (std::size_t k = 0; k < K; ++k) bw[i * K + k] = i < nn ? b[(n + i) * K + k] : 0;
    for (std::size_t m = 0; m < M; ++m) {
      const std::int8_t* am = a + m * K;
      __m256i s[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
      std::size_t k = 0;
      for (; k + 16 <= K; k += 16) {
        const __m256i av = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(am + k)));
        for (int i = 0; i < 4; ++i)
          s[i] = _mm256_add_epi32(
              s[i], _mm256_madd_epi16(av, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bw + i * K + k))));
      }
      for (std::size_t i = 0; i < nn; ++i) {
        std::int32_t t = hsum256(s[i]);
        for (std::size_t kk = k; kk < K; ++kk) t += static_cast<std::int32_t>(am[kk]) * bw[i * K + kk];
        c[m * N + n + i] = t;
      }
    }
  }
}

#if defined(__AVX512F__)
// ------------------------------------------- int8 x int8 -> int32, VNNI
// Columns of c in blocks of 64: the block's 64 rows of b are packed once into
// 4 strips of 16 (per step of 4 k, 64 bytes = 16 rows x 4 consecutive k, as
// b + 128: vpdpbusd's unsigned operand; zero past N and K), then every row of
// a passes over the panel as 4-byte signed broadcasts, 4 rows x 64 columns
// per tile (16 sums, qgemm's W8A8 tile). Each sum starts at -128 * sum(a
// row), so it ends as the signed product (int32 adds wrap; the end is exact).
// Before (thirteenth session), a 4 x 4 tile of dot products along k with a
// horizontal sum per output ran at 0.82x torch._int_mm at 64 x 4096 x 4096
// on Zen 5 (docs/quant.md).
constexpr std::size_t kS8Block = 64;

// Rows [n0, n1) of b (n1 - n0 <= 64) into panel: strip v at v * steps * 64.
void s8_pack_block(const std::int8_t* b, std::size_t K, std::size_t n0, std::size_t n1, std::size_t steps,
                   std::uint8_t* panel) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (std::size_t v = 0; v < kS8Block / 16; ++v) {
    std::uint8_t* dst = panel + v * steps * 64;
    for (std::size_t k = 0; k < K; k += 64) {
      const __mmask64 mk = K - k >= 64 ? ~__mmask64{0} : (__mmask64{1} << (K - k)) - 1;
      const __m512i flip_k = _mm512_maskz_mov_epi8(mk, flip);  // k past K stays 0
      __m512i r[16];
      for (std::size_t j = 0; j < 16; ++j) {
        const std::size_t n = n0 + 16 * v + j;
        r[j] = n < n1 ? _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, b + n * K + k), flip_k) : _mm512_setzero_si512();
      }
      __m512i cols[16];  // cols[t]: step t0 + t, 16 rows x 4 k
      transpose16(r, cols);
      const std::size_t t0 = k / 4, count = steps - t0 < 16 ? steps - t0 : 16;
      for (std::size_t t = 0; t < count; ++t) _mm512_storeu_si512(dst + (t0 + t) * 64, cols[t]);
    }
  }
}

// The sum of K signed bytes (vpdpbusd against ones; past K, masked to zero).
__attribute__((target("avx512vnni"))) inline std::int32_t s8_row_sum(const std::int8_t* row, std::size_t K) {
  __m512i s = _mm512_setzero_si512();
  for (std::size_t k = 0; k < K; k += 64) {
    const __mmask64 mk = K - k >= 64 ? ~__mmask64{0} : (__mmask64{1} << (K - k)) - 1;
    s = dpbusd(s, _mm512_set1_epi8(1), _mm512_maskz_loadu_epi8(mk, row + k));
  }
  return _mm512_reduce_add_epi32(s);
}

// k bytes of a row from k on (fewer than 4 at the row's end: zero padded),
// as one int32 lane pattern
inline std::int32_t s8_word(const std::int8_t* row, std::size_t k, std::size_t K) {
  std::int32_t w = 0;
  std::memcpy(&w, row + k, K - k < 4 ? K - k : 4);
  return w;
}

template <int MR>
__attribute__((target("avx512vnni"))) void s8_tile(const std::uint8_t* panel, std::size_t steps,
                                                   const std::int8_t* a, std::size_t K, std::size_t m0,
                                                   const std::int32_t* asum, std::size_t n0, std::size_t n1,
                                                   std::int32_t* c, std::size_t N) {
  constexpr int NV = kS8Block / 16;
  const std::int8_t* ar[MR];
  for (int r = 0; r < MR; ++r) ar[r] = a + (m0 + r) * K;
  __m512i acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_set1_epi32(-128 * asum[r]);
  const auto step = [&](std::size_t t, const std::int32_t* words) __attribute__((always_inline)) {
    __m512i w[NV];
    for (int v = 0; v < NV; ++v) w[v] = _mm512_loadu_si512(panel + (v * steps + t) * 64);
    for (int r = 0; r < MR; ++r) {
      const __m512i xb = _mm512_set1_epi32(words[r]);
      for (int v = 0; v < NV; ++v) acc[r][v] = dpbusd(acc[r][v], w[v], xb);
    }
  };
  const std::size_t full = K / 4;
  for (std::size_t t = 0; t < full; ++t) {
    std::int32_t words[MR];
    for (int r = 0; r < MR; ++r) std::memcpy(&words[r], ar[r] + 4 * t, 4);
    step(t, words);
  }
  if (full < steps) {
    std::int32_t words[MR];
    for (int r = 0; r < MR; ++r) words[r] = s8_word(ar[r], 4 * full, K);
    step(full, words);
  }
  for (int v = 0; v < NV; ++v) {
    const std::size_t c0 = n0 + 16 * static_cast<std::size_t>(v);
    if (c0 >= n1) break;
    const __mmask16 mask = static_cast<__mmask16>(n1 - c0 >= 16 ? 0xFFFF : (1u << (n1 - c0)) - 1);
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_epi32(c + (m0 + r) * N + c0, mask, acc[r][v]);
  }
}

__attribute__((target("avx512vnni"))) void s8_vnni(const std::int8_t* a, std::size_t M, const std::int8_t* b,
                                                   std::size_t K, std::size_t n0, std::size_t n1, std::int32_t* c,
                                                   std::size_t N) {
  const std::size_t steps = (K + 3) / 4;
  thread_local std::vector<std::uint8_t> panel;
  thread_local std::vector<std::int32_t> asum;
  if (panel.size() < kS8Block * 4 * steps) panel.resize(kS8Block * 4 * steps);
  if (asum.size() < M) asum.resize(M);
  // a's row sums, once per call (matmul_s8 hands over one block of 64
  // columns): K / 64 vpdpbusd per row of a against the block's K (1.6 %)
  for (std::size_t m = 0; m < M; ++m) asum[m] = s8_row_sum(a + m * K, K);
  for (std::size_t n = n0; n < n1; n += kS8Block) {
    const std::size_t e = n1 - n < kS8Block ? n1 : n + kS8Block;
    s8_pack_block(b, K, n, e, steps, panel.data());
    std::size_t m = 0;
    for (; m + 4 <= M; m += 4) s8_tile<4>(panel.data(), steps, a, K, m, asum.data() + m, n, e, c, N);
    switch (M - m) {
      case 3: s8_tile<3>(panel.data(), steps, a, K, m, asum.data() + m, n, e, c, N); break;
      case 2: s8_tile<2>(panel.data(), steps, a, K, m, asum.data() + m, n, e, c, N); break;
      case 1: s8_tile<1>(panel.data(), steps, a, K, m, asum.data() + m, n, e, c, N); break;
      default: break;
    }
  }
}

// Fewer than kS8PanelRows rows of a (a GEMV, mostly): dot products along k
// of 4 rows of a by 4 rows of b as stored (a + 128 unsigned, minus
// 128 * sum(b row)) and a horizontal sum per output; packing b would cost
// as much as the product (Zen 5, 1 x 384 x 384: 27-34 us this way, 43-46
// packed).
__attribute__((target("avx512vnni"))) void s8_vnni_dot(const std::int8_t* a, std::size_t M, const std::int8_t* b,
                                                       std::size_t K, std::size_t n0, std::size_t n1,
                                                       std::int32_t* c, std::size_t N) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (std::size_t n = n0; n < n1; n += 4) {
    const std::size_t nn = n1 - n < 4 ? n1 - n : 4;
    const std::int8_t* br[4];
    for (std::size_t i = 0; i < 4; ++i) br[i] = b + (n + (i < nn ? i : 0)) * K;
    std::int32_t bsum[4];
    for (int i = 0; i < 4; ++i) bsum[i] = s8_row_sum(br[i], K);
    // 4 rows of a x 4 rows of b per tile: 16 accumulators, 8 loads per 16 vpdpbusd
    for (std::size_t m = 0; m < M; m += 4) {
      const std::size_t nm = M - m < 4 ? M - m : 4;
      const std::int8_t* ar[4];
      for (std::size_t i = 0; i < 4; ++i) ar[i] = a + (m + (i < nm ? i : 0)) * K;
      __m512i acc[4][4];
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_si512();
      std::size_t k = 0;
      for (; k + 64 <= K; k += 64) {
        __m512i bv[4];
        for (int j = 0; j < 4; ++j) bv[j] = _mm512_loadu_si512(br[j] + k);
        for (int i = 0; i < 4; ++i) {
          const __m512i av = _mm512_xor_si512(_mm512_loadu_si512(ar[i] + k), flip);  // a + 128, unsigned
          for (int j = 0; j < 4; ++j) acc[i][j] = dpbusd(acc[i][j], av, bv[j]);
        }
      }
      if (k < K) {  // padded bytes: a becomes 128 but meets b's zeros
        const __mmask64 mk = (__mmask64{1} << (K - k)) - 1;
        __m512i bv[4];
        for (int j = 0; j < 4; ++j) bv[j] = _mm512_maskz_loadu_epi8(mk, br[j] + k);
        for (int i = 0; i < 4; ++i) {
          const __m512i av = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mk, ar[i] + k), flip);
          for (int j = 0; j < 4; ++j) acc[i][j] = dpbusd(acc[i][j], av, bv[j]);
        }
      }
      for (std::size_t i = 0; i < nm; ++i)
        for (std::size_t j = 0; j < nn; ++j)
          c[(m + i) * N + n + j] = _mm512_reduce_add_epi32(acc[i][j]) - 128 * bsum[j];
    }
  }
}

// int8 x int8 on AMX with the operands' roles swapped: tiles of 16 rows of
// b as they are in memory (tdpbssd's first operand) times a in S8Tiles's
// layout (the second operand: only the small a is repacked per call). Tiles
// 0-3 hold the sums of 16 columns n by 16 rows m, written to c transposed.
// b's rows are read 64 bytes at a time, so a last step past K reads into
// the next row (meeting a's zero padding); the block holding b's last row
// goes through a zero-padded copy, so nothing is read past b.
template <int NA, int NB>
__attribute__((target("amx-tile,amx-int8"))) void s8_block_amx(const std::int8_t* brows, long ldb, std::size_t steps,
                                                               const std::int8_t* at, std::size_t at_stride,
                                                               std::size_t nvalid, std::size_t mvalid,
                                                               std::int32_t* c, std::size_t N) {
  alignas(64) std::int32_t sums[4][16][16];
  amx_zero_sums<NA, NB>();
  for (std::size_t s = 0; s < steps; ++s)
    amx_step<NA, NB>(brows + s * kAmxK, brows + 16 * ldb + s * kAmxK, ldb, at + s * 1024, at + at_stride + s * 1024,
                     64);
  amx_store_sums<NA, NB>(sums);
  for (std::size_t m = 0; m < mvalid; ++m)
    for (std::size_t n = 0; n < nvalid; ++n) c[m * N + n] = sums[(n / 16) * 2 + m / 16][n % 16][m % 16];
}

__attribute__((target("amx-tile,amx-int8"))) void s8_amx(const std::int8_t* a_tiles, std::size_t M,
                                                         const std::int8_t* b, std::size_t K, std::size_t n0,
                                                         std::size_t n1, std::int32_t* c, std::size_t N) {
  const std::size_t kp = quant::S8Tiles::kpad(K), steps = kp / kAmxK, at_stride = 16 * kp;
  thread_local std::vector<std::int8_t> pad;
  amx_configure();
  for (std::size_t n = n0; n < n1; n += 32) {
    const std::size_t nvalid = n1 - n < 32 ? n1 - n : 32;
    const std::int8_t* brows = b + n * K;
    long ldb = static_cast<long>(K);
    if (n + 32 >= N) {  // holds b's last row
      if (pad.size() < 32 * kp) pad.resize(32 * kp);
      std::fill(pad.begin(), pad.begin() + 32 * kp, std::int8_t{0});
      for (std::size_t r = 0; r < nvalid; ++r) std::memcpy(pad.data() + r * kp, brows + r * K, K);
      amx_fence();
      brows = pad.data();
      ldb = static_cast<long>(kp);
    }
    for (std::size_t m = 0; m < M; m += 32) {
      const std::size_t mvalid = M - m < 32 ? M - m : 32;
      const std::int8_t* at = a_tiles + (m / 16) * at_stride;
      std::int32_t* cb = c + m * N + n;
      if (nvalid > 16)
        mvalid > 16 ? s8_block_amx<2, 2>(brows, ldb, steps, at, at_stride, nvalid, mvalid, cb, N)
                    : s8_block_amx<2, 1>(brows, ldb, steps, at, at_stride, nvalid, mvalid, cb, N);
      else
        mvalid > 16 ? s8_block_amx<1, 2>(brows, ldb, steps, at, at_stride, nvalid, mvalid, cb, N)
                    : s8_block_amx<1, 1>(brows, ldb, steps, at, at_stride, nvalid, mvalid, cb, N);
    }
  }
  _tile_release();
}
#endif

}  // namespace

template <Isa I>
void qmatmul_rows(const QMatmulArgs& a, std::size_t r0, std::size_t r1, float* scratch) {
  if (a.batch == 1) {
    const bool full_groups = a.param_stride != 0 && a.group_size % 32 == 0 && a.in % a.group_size == 0;
    // pairs pay off for 4-bit codes (conversion-bound); 8-bit rows are
    // load-bound when long, but a row of up to 2048 codes is a chain of
    // dependent FMAs, not a stream (int8 per channel at batch 1, 1 thread:
    // 384x384 8.9 -> 8.0 us, 1536x384 23 -> 19 us)
    const bool pairs = a.bits == 4 && full_groups;
    const bool pairs8 = a.bits == 8 && full_groups && a.in <= 2048;
    auto run = [&](auto one, auto two) {
      std::size_t r = r0;
      if (pairs || pairs8)
        for (; r + 2 <= r1; r += 2) two(a, r, a.y + r, a.y + r + 1);
      for (; r < r1; ++r) a.y[r] = one(a, r);
    };
#if defined(__AVX512F__)
    if (pairs) {
      std::size_t r = r0;
      for (; r + 2 <= r1; r += 2)
        a.is_signed ? gemv_rows_lut<true, true>(a, r, a.y + r) : gemv_rows_lut<false, true>(a, r, a.y + r);
      if (r < r1) a.is_signed ? gemv_rows_lut<true, false>(a, r, a.y + r) : gemv_rows_lut<false, false>(a, r, a.y + r);
      return;
    }
#endif
    if (a.bits == 4)
      a.is_signed ? run(gemv_row<I, 4, true>, gemv_two_rows<I, 4, true>)
                  : run(gemv_row<I, 4, false>, gemv_two_rows<I, 4, false>);
    else
      a.is_signed ? run(gemv_row<I, 8, true>, gemv_two_rows<I, 8, true>)
                  : run(gemv_row<I, 8, false>, gemv_two_rows<I, 8, false>);
  } else {
    batched_rows<I>(a, r0, r1, scratch);
  }
}

template <Isa I>
void matmul_s8_cols(const std::int8_t* a, std::size_t M, const std::int8_t* b, std::size_t K, std::size_t n0,
                    std::size_t n1, const std::int32_t* bsum, std::int32_t* c, std::size_t N, std::int16_t* scratch,
                    const std::int8_t* a_tiles) {
  (void)bsum;
#if defined(__AVX512F__)
  if (a_tiles) return s8_amx(a_tiles, M, b, K, n0, n1, c, N);
  if (quant::has_avx512_vnni())
    return M < kS8PanelRows ? s8_vnni_dot(a, M, b, K, n0, n1, c, N) : s8_vnni(a, M, b, K, n0, n1, c, N);
#endif
  (void)a_tiles;
  s8_madd(a, M, b, K, n0, n1, c, N, scratch);
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void qmatmul_rows<SLIMGRAD_UNIT_ISA>(const QMatmulArgs&, std::size_t, std::size_t, float*);
template void matmul_s8_cols<SLIMGRAD_UNIT_ISA>(const std::int8_t*, std::size_t, const std::int8_t*, std::size_t,
                                        std::size_t, std::size_t, const std::int32_t*, std::int32_t*, std::size_t,
                                        std::int16_t*, const std::int8_t*);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
