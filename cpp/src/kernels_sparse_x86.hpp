// Hand-written x86 sparse kernels (AVX2 + FMA and AVX-512), included by
// kernels_sparse_simd.hpp and compiled once per ISA unit.
//  - 2:4, batch <= 8: a chunk of kept values (16 for AVX-512, 8 for AVX2,
//    twice as many x columns) becomes a permutation index from its 2-bit
//    positions (one broadcast load when rows start on a byte). AVX-512:
//    srlv + vpternlogd (& 3 | group base), one vpermt2ps over two 16-float
//    x loads. AVX2: x is regrouped once per chunk (vperm2f128) so each
//    value's 4 candidates share its 128-bit lane; two vpermilps (low 2 bits
//    only: no mask) and a blend. One FMA per chunk and batch row. Several W
//    rows share each x load (4 at batch 1: four independent FMA chains and
//    one 4-way horizontal sum).
//  - 2:4, batch > 8 (panels): x packed once per call into batch-contiguous
//    panels (xt[panel][column][PW], PW = 4 vectors: 64 for AVX-512, 32 for
//    AVX2; the last panel only as wide as the batch tail rounded up to a
//    vector; cache-line aligned, see pack_panel). Per kept value the
//    micro-kernel broadcasts the weight and FMAs it over PW batch columns of
//    the x row its position selects (a 256-entry table turns a positions
//    byte into 4 offsets): one decode and one broadcast per 4 FMAs. 4 W rows
//    at a time, value-major (consecutive FMAs feed different accumulators).
//    Columns in blocks of 4096 / PW values (32 KB of panel) while the
//    thread's rows (32, or 128 for tall W) run over the block; partial sums
//    wait in a buffer and reach y through 8 x 8 register transposes.
//  - CSR: vgatherdps of x at 16 / 8 column indices, up to 8 batch rows per
//    decoded chunk; at batch 1, 4 rows share one horizontal sum.
//  - CSR slices (AVX-512): a lane per W row; per step a 32-column window of
//    x in two registers and one vpermt2ps by the lanes' column bytes.
//  - 2:4 slices (AVX-512 and AVX2), batch <= 8: a lane per W row; per group
//    of 4 columns one 128-bit broadcast of x and a vpermilps per kept value
//    by the lane's position bits; above batch 8 the panel path reads them
//    through Sliced24.
//  - Tails: masked loads (zero lanes add 0 * 0), never reading past a buffer.
//  - Rounding: float32 FMA. Small-batch paths keep lane partial sums reduced
//    in a fixed tree; the panel path sums every y entry in k order, one FMA
//    per kept value, so AVX2 and AVX-512 give identical bits there. Results
//    depend on shapes only, never on the thread count.
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "slimgrad/simd.hpp"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

// Helpers whose inlining matters: an out-of-line call taking an accumulator
// array's address keeps the accumulators in memory through a whole loop.
#define SLIMGRAD_INLINE inline __attribute__((always_inline))
#define SLIMGRAD_LAMBDA_INLINE __attribute__((always_inline))

namespace slimgrad::kernels {
namespace {

constexpr std::size_t kTileBatch = 8;
// Batch rows per pass of the CSR-slices kernel (AVX-512): 4 x 4 accumulators.
constexpr std::size_t kSliceBatch = 4;

// Calls fn(std::integral_constant<size_t, n>) for 1 <= n <= 8 (n clamped).
template <class Fn>
void with_count(std::size_t n, Fn&& fn) {
  switch (n) {
    case 1: return fn(std::integral_constant<std::size_t, 1>{});
    case 2: return fn(std::integral_constant<std::size_t, 2>{});
    case 3: return fn(std::integral_constant<std::size_t, 3>{});
    case 4: return fn(std::integral_constant<std::size_t, 4>{});
    case 5: return fn(std::integral_constant<std::size_t, 5>{});
    case 6: return fn(std::integral_constant<std::size_t, 6>{});
    case 7: return fn(std::integral_constant<std::size_t, 7>{});
    default: return fn(std::integral_constant<std::size_t, 8>{});
  }
}

// W rows sharing an x chunk in the small-batch path: enough for 4
// independent accumulators, the x loads amortized over the rows.
constexpr std::size_t rows_for(std::size_t nb) { return nb >= 4 ? 1 : nb == 1 ? 4 : 2; }

// Up to 8 bytes of positions starting at byte `first`, never past nbytes.
inline std::uint64_t position_word(const std::uint8_t* positions, std::size_t nbytes, std::size_t first) {
  std::uint64_t bits;
  if (first + 8 <= nbytes) {  // the common case: a fixed-size copy, one load
    std::memcpy(&bits, positions + first, 8);
  } else {
    bits = 0;
    std::memcpy(&bits, positions + first, nbytes - first);
  }
  return bits;
}

// Where a 2:4 W keeps row r's value k (at row(r) + k * kStride) and its
// positions, for the panel path: at(r) locates row r's positions once,
// then byte(at, k) (k % 4 == 0) holds values k..k+3's (bits 2 (k % 4)) and
// nibble(at, k) (k even) its group's two.
struct RowMajor24 {  // compress_24's arrays
  static constexpr std::size_t kStride = 1;
  const float* values;
  const std::uint8_t* positions;
  std::size_t half;
  const float* row(std::size_t r) const { return values + r * half; }
  bool aligned() const { return half % 4 == 0; }  // every row starts on a positions byte
  std::size_t at(std::size_t r) const { return r * half; }  // the flat index of the row's value 0
  unsigned byte(std::size_t v0, std::size_t k) const { return positions[(v0 + k) >> 2]; }
  unsigned nibble(std::size_t v0, std::size_t k) const {
    const std::size_t v = v0 + k;
    return (positions[v >> 2] >> (2 * (v & 3))) & 15u;
  }
};
struct Sliced24 {  // pack_24_slices' arrays (sparse.hpp)
  static constexpr std::size_t kStride = kSliceRows;
  const float* values;
  const std::uint32_t* ctrl;
  std::size_t half, chunks;
  const float* row(std::size_t r) const { return values + r / kSliceRows * kSliceRows * half + r % kSliceRows; }
  static bool aligned() { return true; }  // a word per lane and 8 groups
  const std::uint32_t* at(std::size_t r) const {  // the lane's word of chunk 0
    return ctrl + r / kSliceRows * chunks * kSliceRows + r % kSliceRows;
  }
  static std::uint32_t word(const std::uint32_t* w, std::size_t k) {
    constexpr std::size_t kValues = 2 * kSlice24Groups;  // per word
    return w[k / kValues * kSliceRows] >> (2 * (k % kValues));
  }
  static unsigned byte(const std::uint32_t* w, std::size_t k) { return word(w, k) & 0xFFu; }
  static unsigned nibble(const std::uint32_t* w, std::size_t k) { return word(w, k) & 15u; }
};

#if defined(__AVX2__) && defined(__FMA__)

// ---------------------------------------------------------------- panels
inline __m256i mask8(std::size_t n) {  // first n lanes set
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), lanes);
}

// One vector type per ISA: the panel path's loads / broadcast-FMA and the
// CSR tile's index loads, gathers and tail masks (n < L lanes).
struct Ymm {
  using V = __m256;
  using M = __m256i;
  static constexpr std::size_t L = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V fma(const float* w, V x, V acc) { return _mm256_fmadd_ps(_mm256_broadcast_ss(w), x, acc); }
  static V fma(V a, V b, V acc) { return _mm256_fmadd_ps(a, b, acc); }
  static M mask(std::size_t n) { return mask8(n); }
  static __m256i load_idx(const std::int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static __m256i load_idx(const std::int32_t* p, M m) { return _mm256_maskload_epi32(p, m); }
  static V load(const float* p, M m) { return _mm256_maskload_ps(p, m); }
  static V gather(const float* base, __m256i idx) { return _mm256_i32gather_ps(base, idx, 4); }
  static V gather(const float* base, __m256i idx, M m) {
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), base, idx, _mm256_castsi256_ps(m), 4);
  }
};
#if defined(__AVX512F__)
inline __mmask16 mask16(std::size_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}
struct Zmm {
  using V = __m512;
  using M = __mmask16;
  static constexpr std::size_t L = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V fma(const float* w, V x, V acc) { return _mm512_fmadd_ps(_mm512_set1_ps(*w), x, acc); }
  static V fma(V a, V b, V acc) { return _mm512_fmadd_ps(a, b, acc); }
  static M mask(std::size_t n) { return mask16(n); }
  static __m512i load_idx(const std::int32_t* p) { return _mm512_loadu_si512(p); }
  static __m512i load_idx(const std::int32_t* p, M m) { return _mm512_maskz_loadu_epi32(m, p); }
  static V load(const float* p, M m) { return _mm512_maskz_loadu_ps(m, p); }
  static V gather(const float* base, __m512i idx) { return _mm512_i32gather_ps(idx, base, 4); }
  static V gather(const float* base, __m512i idx, M m) {
    return _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, base, 4);
  }
};
#endif

// Byte offsets into a panel block of PW-float columns for the 4 values a
// positions byte describes (2 groups: columns 0-3 and 4-7 of the block):
// one table load per value instead of shifts and masks.
template <std::size_t PW>
struct PanelOffsets {
  std::uint16_t at[256][4];
  constexpr PanelOffsets() : at{} {
    for (unsigned b = 0; b < 256; ++b) {
      const unsigned col[4] = {b & 3u, (b >> 2) & 3u, 4 + ((b >> 4) & 3u), 4 + (b >> 6)};
      for (unsigned j = 0; j < 4; ++j) at[b][j] = static_cast<std::uint16_t>(col[j] * PW * sizeof(float));
    }
  }
};
template <std::size_t PW>
inline constexpr PanelOffsets<PW> kPanelOffsets{};

// R rows starting at r, kept values [k0, k1) (both even), over one panel
// (column c at xt + c * PW); partial sums in buf (R x PW). W in layout L
// (RowMajor24 or Sliced24); bytes of 4 positions when L.aligned() and k0 % 4 == 0.
template <class T, std::size_t R, std::size_t NV, class L>
void panel24(const float* xt, const L& w24, std::size_t r, std::size_t k0, std::size_t k1, float* buf) {
  constexpr std::size_t PW = NV * T::L, S = L::kStride;
  typename T::V acc[R][NV];  // the first k block starts from zero, later ones from buf
  for (std::size_t i = 0; i < R; ++i)
    for (std::size_t j = 0; j < NV; ++j) acc[i][j] = k0 == 0 ? T::zero() : T::load(buf + i * PW + j * T::L);
  const float* wr[R];
  decltype(w24.at(r)) pr[R];
  for (std::size_t i = 0; i < R; ++i) {
    wr[i] = w24.row(r + i);
    pr[i] = w24.at(r + i);
  }
  // Fully unrolled (pragmas): with 16 accumulators GCC otherwise keeps the
  // row loop and round-trips the accumulators through buf on every value.
  auto step = [&](std::size_t i, const float* xv, const float* w) SLIMGRAD_LAMBDA_INLINE {
#pragma GCC unroll 4
    for (std::size_t j = 0; j < NV; ++j) acc[i][j] = T::fma(w, T::load(xv + j * T::L), acc[i][j]);
  };
  std::size_t k = k0;
  if (w24.aligned() && k0 % 4 == 0) {
    const auto& lut = kPanelOffsets<PW>.at;
    for (; k + 4 <= k1; k += 4) {  // two groups = 8 columns from 2k: one positions byte per row
      const auto* xg = reinterpret_cast<const char*>(xt + 2 * k * PW);
      // Value q of every row, then value q + 1: consecutive FMAs go to
      // different accumulators (a row's 4 values would make one chain of 4
      // dependent FMAs per accumulator); each y entry still in k order.
      std::uint64_t off[R];  // a row's 4 offsets in one load, taken apart by shifts
#pragma GCC unroll 4
      for (std::size_t i = 0; i < R; ++i) std::memcpy(&off[i], lut[w24.byte(pr[i], k)], sizeof(off[i]));
#pragma GCC unroll 4
      for (std::size_t q = 0; q < 4; ++q)
#pragma GCC unroll 4
        for (std::size_t i = 0; i < R; ++i)
          step(i, reinterpret_cast<const float*>(xg + ((off[i] >> (16 * q)) & 0xFFFFu)), wr[i] + (k + q) * S);
    }
  }
  for (; k < k1; k += 2) {  // one group of 4 columns: 2 kept values
    const float* xg = xt + 2 * k * PW;
#pragma GCC unroll 4
    for (std::size_t i = 0; i < R; ++i) {
      const unsigned nib = w24.nibble(pr[i], k);
      step(i, xg + (nib & 3u) * PW, wr[i] + k * S);
      step(i, xg + (nib >> 2) * PW, wr[i] + (k + 1) * S);
    }
  }
  for (std::size_t i = 0; i < R; ++i)
    for (std::size_t j = 0; j < NV; ++j) T::store(buf + i * PW + j * T::L, acc[i][j]);
}

// y[j * out + i] = buf[i * width + j] for i < rows, j < nb: the panel's
// partial sums (rows x batch columns) into y (batch x rows), 8 x 8 blocks
// in registers (a scalar transpose cost ~10 % of a batch-512 product).
inline void store_transposed(const float* buf, std::size_t rows, std::size_t nb, std::size_t width, float* y,
                             std::size_t out) {
  std::size_t j = 0;
  for (; j + 8 <= nb; j += 8) {
    std::size_t i = 0;
    for (; i + 8 <= rows; i += 8) simd::transpose8x8(buf + i * width + j, width, y + j * out + i, out);
    for (; i < rows; ++i)
      for (std::size_t c = j; c < j + 8; ++c) y[c * out + i] = buf[i * width + c];
  }
  for (; j < nb; ++j)
    for (std::size_t i = 0; i < rows; ++i) y[j * out + i] = buf[i * width + j];
}

// One panel (PWp = NV * T::L batch columns, column c at xp + c * PWp) for
// rows [r0, r1): k blocks of KB values (32 KB of a full panel)
// while the rows run over the block, R rows at a time.
template <class T, std::size_t NV, std::size_t KB, class L>
void panel24_rows(const float* xp, const L& w24, std::size_t r0, std::size_t r1, float* buf) {
  // R W rows of NV vectors each: at most 16 zmm accumulators (4 x 4) or 8
  // ymm (AVX2 has 16 registers: 2 x 4), enough independent FMA chains to
  // cover the FMA latency.
  constexpr std::size_t R = std::min<std::size_t>(4, T::L / NV);
  constexpr std::size_t PW = NV * T::L;
  for (std::size_t k0 = 0; k0 < w24.half; k0 += KB) {
    const std::size_t k1 = std::min(w24.half, k0 + KB);
    std::size_t r = r0;
    for (; r + R <= r1; r += R) panel24<T, R, NV>(xp, w24, r, k0, k1, buf + (r - r0) * PW);
    if (r < r1)
      with_count(r1 - r, [&](auto n) {
        panel24<T, decltype(n)::value, NV>(xp, w24, r, k0, k1, buf + (r - r0) * PW);
      });
  }
}

// Rows [r0, r1) (at most kPanelRowGrain) of y for every batch row, from
// the packed panels (kPanelVectors vectors wide; the last panel only as wide
// as the batch tail rounded up to a vector, see panel_width).
template <class T, class L>
void gemm24_panels(const float* xt, std::size_t batch, std::size_t in, const L& w24, std::size_t out,
                   std::size_t r0, std::size_t r1, float* y) {
  constexpr std::size_t PW = kPanelVectors * T::L, KB = 4096 / PW;  // 32 KB of a full panel (16 KB measured ~10 % slower)
  static_assert(KB % 4 == 0, "k blocks start on positions bytes");
  const std::size_t rows = r1 - r0;
  alignas(64) float buf[kPanelRowGrain * PW];  // 32 KB (AVX-512)
  for (std::size_t p = 0; p * PW < batch; ++p) {
    const float* xp = xt + p * in * PW;
    const std::size_t width = panel_width(batch, PW, p);
    // No zero fill of buf: the first k block starts its sums from zero and
    // writes every row (panels exist only for in > 0, sparse.cpp); 0.4-1.2 %
    // of a batch-512 product on MiniLM's shapes.
    switch (width / T::L) {  // the tail panel: fewer vectors, no FMAs on padding past a vector
      case 1: panel24_rows<T, 1, KB>(xp, w24, r0, r1, buf); break;
      case 2: panel24_rows<T, 2, KB>(xp, w24, r0, r1, buf); break;
      case 3: panel24_rows<T, 3, KB>(xp, w24, r0, r1, buf); break;
      default: panel24_rows<T, kPanelVectors, KB>(xp, w24, r0, r1, buf); break;
    }
    store_transposed(buf, rows, std::min(PW, batch - p * PW), width, y + p * PW * out + r0, out);
  }
}

// --------------------------------------------------------- AVX2 small batch


SLIMGRAD_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

// The 4 horizontal sums of a, b, c, d (fixed order).
SLIMGRAD_INLINE __m128 hsum4(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
}

#if defined(__AVX512F__)
SLIMGRAD_INLINE __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d);
SLIMGRAD_INLINE float hsum(__m512 v);
#endif

// acc[0..N) horizontal sums into s, 4 at a time where possible. Inlined
// (an out-of-line call would take acc's address and keep the accumulators
// in memory through the whole loop: measured 3x slower).
template <std::size_t N, class V>
SLIMGRAD_INLINE void hsums(const V (&acc)[N], float* s) {
  std::size_t i = 0;
  for (; i + 4 <= N; i += 4) _mm_storeu_ps(s + i, hsum4(acc[i], acc[i + 1], acc[i + 2], acc[i + 3]));
  for (; i < N; ++i) s[i] = hsum(acc[i]);
}

// y[j * out + r + i] = the horizontal sum of acc[i * NB + j]: a tile's
// R W rows x NB batch rows (inlined with hsums, for the same reason).
template <std::size_t R, std::size_t NB, class V>
SLIMGRAD_INLINE void store_tile(const V (&acc)[R * NB], float* y, std::size_t out, std::size_t r) {
  float s[R * NB];
  hsums(acc, s);
  for (std::size_t i = 0; i < R; ++i)
    for (std::size_t j = 0; j < NB; ++j) y[j * out + r + i] = s[i * NB + j];
}

// R W rows (from r) x NB batch rows: y[j * out + r + i] for the full row.
// A chunk is 8 values = 16 columns from 2k. x is regrouped once per chunk
// (shared by the R rows) so that every value's 4 candidates sit in its own
// 128-bit lane: A = groups 0 and 2, B = groups 1 and 3; vpermilps then
// needs only the 2-bit position (it ignores the higher bits: no mask) and
// a blend takes lanes 2-3 and 6-7 from B.
template <std::size_t R, std::size_t NB>
void tile24_avx2(const float* x, std::size_t in, const float* values, const std::uint8_t* positions,
                 std::size_t nbytes, std::size_t r, float* y, std::size_t out) {
  const std::size_t half = in / 2;
  const __m256i shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  __m256 acc[R * NB];
  for (auto& a : acc) a = _mm256_setzero_ps();
  // One chunk; bits(i) gives row i's 16 position bits in the low half of
  // every 32-bit lane.
  auto chunk = [&](std::size_t k, std::size_t t, auto bits) SLIMGRAD_LAMBDA_INLINE {
    __m256 ga[NB], gb[NB];
    for (std::size_t j = 0; j < NB; ++j) {
      __m256 lo, hi;
      if (t == 8) {
        lo = _mm256_loadu_ps(x + j * in + 2 * k);
        hi = _mm256_loadu_ps(x + j * in + 2 * k + 8);
      } else {  // t even: 2t columns, the first 8 in lo
        lo = _mm256_maskload_ps(x + j * in + 2 * k, mask8(2 * t));
        hi = _mm256_maskload_ps(x + j * in + 2 * k + 8, mask8(2 * t > 8 ? 2 * t - 8 : 0));
      }
      ga[j] = _mm256_permute2f128_ps(lo, hi, 0x20);
      gb[j] = _mm256_permute2f128_ps(lo, hi, 0x31);
    }
    for (std::size_t i = 0; i < R; ++i) {
      const std::size_t v = (r + i) * half + k;
      const __m256i idx = _mm256_srlv_epi32(bits(i, v), shifts);
      const __m256 w = t == 8 ? _mm256_loadu_ps(values + v) : _mm256_maskload_ps(values + v, mask8(t));
      for (std::size_t j = 0; j < NB; ++j) {
        const __m256 g = _mm256_blend_ps(_mm256_permutevar_ps(ga[j], idx), _mm256_permutevar_ps(gb[j], idx), 0xCC);
        acc[i * NB + j] = _mm256_fmadd_ps(w, g, acc[i * NB + j]);
      }
    }
  };
  std::size_t k = 0;
  if (half % 4 == 0) {  // every row starts on a byte: a chunk's bits are 2 whole bytes
    for (; k + 8 <= half; k += 8)
      chunk(k, 8, [&](std::size_t, std::size_t v) {
        std::int16_t b;
        std::memcpy(&b, positions + (v >> 2), 2);
        return _mm256_set1_epi16(b);  // vpbroadcastw: srlv by <= 14 reads only the low copy
      });
  }
  for (; k < half; k += 8)
    chunk(k, std::min<std::size_t>(8, half - k), [&](std::size_t, std::size_t v) {
      return _mm256_set1_epi32(static_cast<int>(position_word(positions, nbytes, v >> 2) >> (2 * (v & 3))));
    });
  store_tile<R, NB>(acc, y, out, r);
}

// The AVX2 form of slice24_avx512 (the same sums, the same bits): half a
// slice (8 lanes: rows 16 s + 8 h ..) x NB batch rows, x's group broadcast
// to both 128-bit lanes (vpermilps picks within a lane).
template <std::size_t NB>
void slice24_avx2(const float* x, std::size_t in, const float* values, const std::uint32_t* ctrl, std::size_t s,
                  std::size_t h, float* y, std::size_t out) {
  const std::size_t half = in / 2, groups = in / 4, chunks = slice24_chunks(in);
  __m256 acc[NB][4];
  for (auto& a : acc)
    for (auto& v : a) v = _mm256_setzero_ps();
  for (std::size_t c = 0; c < chunks; ++c) {
    __m256i word =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ctrl + (s * chunks + c) * kSliceRows + 8 * h));
    auto group = [&](std::size_t g, auto parity) SLIMGRAD_LAMBDA_INLINE {
      constexpr std::size_t p = 2 * decltype(parity)::value;
      const float* v = values + (s * half + 2 * g) * kSliceRows + 8 * h;
      const __m256 w0 = _mm256_loadu_ps(v), w1 = _mm256_loadu_ps(v + kSliceRows);
      const __m256i second = _mm256_srli_epi32(word, 2);
      for (std::size_t b = 0; b < NB; ++b) {
        const __m256 xb = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(x + b * in + 4 * g));
        acc[b][p] = _mm256_fmadd_ps(w0, _mm256_permutevar_ps(xb, word), acc[b][p]);
        acc[b][p + 1] = _mm256_fmadd_ps(w1, _mm256_permutevar_ps(xb, second), acc[b][p + 1]);
      }
      word = _mm256_srli_epi32(word, 4);
    };
    const std::size_t g0 = c * kSlice24Groups, g1 = std::min(groups, g0 + kSlice24Groups);
    std::size_t g = g0;  // g0 is even: parity = g % 2
    for (; g + 2 <= g1; g += 2) {
      group(g, std::integral_constant<std::size_t, 0>{});
      group(g + 1, std::integral_constant<std::size_t, 1>{});
    }
    if (g < g1) group(g, std::integral_constant<std::size_t, 0>{});
  }
  const std::size_t r0 = s * kSliceRows + 8 * h;
  if (r0 >= out) return;
  const std::size_t n = std::min<std::size_t>(8, out - r0);
  for (std::size_t b = 0; b < NB; ++b) {
    const __m256 sum = _mm256_add_ps(_mm256_add_ps(acc[b][0], acc[b][1]), _mm256_add_ps(acc[b][2], acc[b][3]));
    if (n == 8)
      _mm256_storeu_ps(y + b * out + r0, sum);
    else
      _mm256_maskstore_ps(y + b * out + r0, mask8(n), sum);
  }
}

// R CSR rows (from r) x NB batch rows, gathers of T::L columns (8 / 16).
template <class T, class P, std::size_t R, std::size_t NB>
void tile_csr(const float* x, std::size_t in, const float* data, const std::int32_t* cols, const P* indptr,
              std::size_t r, float* y, std::size_t out) {
  typename T::V acc[R * NB];
  for (std::size_t i = 0; i < R; ++i) {
    for (std::size_t j = 0; j < NB; ++j) acc[i * NB + j] = T::zero();
    const auto p0 = static_cast<std::size_t>(indptr[r + i]), p1 = static_cast<std::size_t>(indptr[r + i + 1]);
    std::size_t p = p0;
    for (; p + T::L <= p1; p += T::L) {
      const auto idx = T::load_idx(cols + p);
      const auto w = T::load(data + p);
      for (std::size_t j = 0; j < NB; ++j) acc[i * NB + j] = T::fma(w, T::gather(x + j * in, idx), acc[i * NB + j]);
    }
    if (p < p1) {
      const auto m = T::mask(p1 - p);
      const auto idx = T::load_idx(cols + p, m);
      const auto w = T::load(data + p, m);
      for (std::size_t j = 0; j < NB; ++j)
        acc[i * NB + j] = T::fma(w, T::gather(x + j * in, idx, m), acc[i * NB + j]);
    }
  }
  store_tile<R, NB>(acc, y, out, r);
}
#endif  // AVX2 + FMA

#if defined(__AVX512F__)
// ------------------------------------------------------- AVX-512 small batch

SLIMGRAD_INLINE __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  auto fold = [](__m512 v) {
    return _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  };
  return hsum4(fold(a), fold(b), fold(c), fold(d));
}
SLIMGRAD_INLINE float hsum(__m512 v) { return _mm512_reduce_add_ps(v); }

// As tile24_avx2 with 16 values = 32 columns per chunk: vpermt2ps picks
// from both 16-float loads, so the index is position + the group's base.
template <std::size_t R, std::size_t NB>
void tile24_avx512(const float* x, std::size_t in, const float* values, const std::uint8_t* positions,
                   std::size_t nbytes, std::size_t r, float* y, std::size_t out) {
  const std::size_t half = in / 2;
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i three = _mm512_set1_epi32(3);
  __m512 acc[R * NB];
  for (auto& a : acc) a = _mm512_setzero_ps();
  auto chunk = [&](std::size_t k, std::size_t t, auto bits) SLIMGRAD_LAMBDA_INLINE {
    const __mmask16 m0 = mask16(2 * t), m1 = mask16(2 * t > 16 ? 2 * t - 16 : 0), mw = mask16(t);
    __m512 lo[NB], hi[NB];
    for (std::size_t j = 0; j < NB; ++j) {
      lo[j] = _mm512_maskz_loadu_ps(m0, x + j * in + 2 * k);
      hi[j] = _mm512_maskz_loadu_ps(m1, x + j * in + 2 * k + 16);
    }
    for (std::size_t i = 0; i < R; ++i) {
      const std::size_t v = (r + i) * half + k;
      // (bits >> 2l) & 3 | base: vpternlogd 0xEA = (A & B) | C
      const __m512i idx = _mm512_ternarylogic_epi32(_mm512_srlv_epi32(bits(i, v), shifts), three, base, 0xEA);
      const __m512 w = _mm512_maskz_loadu_ps(mw, values + v);
      for (std::size_t j = 0; j < NB; ++j)
        acc[i * NB + j] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(lo[j], idx, hi[j]), acc[i * NB + j]);
    }
  };
  std::size_t k = 0;
  if (half % 4 == 0) {  // every row starts on a byte: a chunk's 32 bits are 4 whole bytes
    for (; k + 16 <= half; k += 16)
      chunk(k, 16, [&](std::size_t, std::size_t v) {
        std::int32_t b;
        std::memcpy(&b, positions + (v >> 2), 4);
        return _mm512_set1_epi32(b);  // vpbroadcastd from memory
      });
  }
  for (; k < half; k += 16)
    chunk(k, std::min<std::size_t>(16, half - k), [&](std::size_t, std::size_t v) {
      return _mm512_set1_epi32(static_cast<int>(position_word(positions, nbytes, v >> 2) >> (2 * (v & 3))));
    });
  store_tile<R, NB>(acc, y, out, r);
}

// One slice (16 rows, a lane each) x NB batch rows. Per step: one values
// load and, per batch row, one vpermt2ps by the step's column byte (the low
// 5 bits of the lane's word, shifted by 8 per step) from the step's
// 32-column window of x, two aligned loads once per pair of steps (which
// share the window, sparse.hpp). Four accumulators per batch row, by
// step % 4, so consecutive FMAs never wait on each other. Masked: padding
// lanes take 0 instead of x (needed only when x holds inf or NaN). The
// sums go to the lanes' rows of y: rows r0.. (rows == nullptr), or the
// slice order's rows by one scatter per batch row.
template <bool Masked, std::size_t NB>
void slice_avx512(const float* xp, std::size_t row, const float* values, const std::uint8_t* index,
                  const std::int32_t* base, const std::int64_t* starts, const std::int32_t* rows, std::size_t s,
                  float* y, std::size_t out) {
  const auto t0 = static_cast<std::size_t>(starts[s]), t1 = static_cast<std::size_t>(starts[s + 1]);
  __m512 acc[NB][4];
  for (auto& a : acc)
    for (auto& v : a) v = _mm512_setzero_ps();
  const __m512i pad = _mm512_set1_epi32(kSlicePad);
  static_assert(kSliceWindowSteps == 2, "x is loaded once per pair of steps");
  const auto pick = [&](__m512 lo, __m512i c, __m512 hi) SLIMGRAD_LAMBDA_INLINE {
    if constexpr (Masked) return _mm512_maskz_permutex2var_ps(_mm512_testn_epi32_mask(c, pad), lo, c, hi);
    else return _mm512_permutex2var_ps(lo, c, hi);
  };
  for (std::size_t t = t0; t < t1; t += 4) {
    const __m512i words = _mm512_loadu_si512(index + kSliceRows * t);
    auto pair = [&](auto kk) SLIMGRAD_LAMBDA_INLINE {  // steps t + k and t + k + 1: one window
      constexpr int k = decltype(kk)::value;
      const __m512i c0 = k == 0 ? words : _mm512_srli_epi32(words, 8 * k);
      const __m512i c1 = _mm512_srli_epi32(words, 8 * (k + 1));
      const __m512 w0 = _mm512_loadu_ps(values + kSliceRows * (t + k));
      const __m512 w1 = _mm512_loadu_ps(values + kSliceRows * (t + k + 1));
      const float* xb = xp + base[t + k];
      for (std::size_t j = 0; j < NB; ++j) {
        const __m512 lo = _mm512_load_ps(xb + j * row), hi = _mm512_load_ps(xb + j * row + 16);
        acc[j][k] = _mm512_fmadd_ps(w0, pick(lo, c0, hi), acc[j][k]);
        acc[j][k + 1] = _mm512_fmadd_ps(w1, pick(lo, c1, hi), acc[j][k + 1]);
      }
    };
    pair(std::integral_constant<int, 0>{});
    pair(std::integral_constant<int, 2>{});
  }
  const std::size_t r0 = s * kSliceRows;
  const __mmask16 m = mask16(out - r0);
  const __m512i to = rows ? _mm512_maskz_loadu_epi32(m, rows + r0) : _mm512_setzero_si512();
  for (std::size_t j = 0; j < NB; ++j) {
    const __m512 sum = _mm512_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]), _mm512_add_ps(acc[j][2], acc[j][3]));
    if (rows) _mm512_mask_i32scatter_ps(y + j * out, m, to, sum, 4);
    else _mm512_mask_storeu_ps(y + j * out + r0, m, sum);
  }
}

// S slices from s (16 rows each, a lane per row) x NB batch rows of the 2:4
// slices (sparse.hpp), batch <= 8. Per group and batch row x's group as a
// 128-bit broadcast; per slice the group's two value vectors, two vpermilps
// (the first value's column in the low 2 bits of the lane's word, the
// second's after a shift by 2) and two FMAs; the word shifts by 4 for the
// next group. Accumulators by group parity and value, the order sparse.hpp
// defines. (Reading the second column by vpermps from x's group expanded
// 4-fold saved the shift but not time: at in = 1536 the expanded x, 24 KB,
// left L1 under the streaming values.)
template <std::size_t S, std::size_t NB>
void slice24_avx512(const float* x, std::size_t in, const float* values,
                    const std::uint32_t* ctrl, std::size_t s, float* y, std::size_t out) {
  const std::size_t half = in / 2, groups = in / 4, chunks = slice24_chunks(in);
  __m512 acc[S][NB][4];
  for (auto& a : acc)
    for (auto& b : a)
      for (auto& v : b) v = _mm512_setzero_ps();
  for (std::size_t c = 0; c < chunks; ++c) {
    __m512i word[S];
    for (std::size_t i = 0; i < S; ++i) word[i] = _mm512_loadu_si512(ctrl + ((s + i) * chunks + c) * kSliceRows);
    auto group = [&](std::size_t g, auto parity) SLIMGRAD_LAMBDA_INLINE {
      constexpr std::size_t p = 2 * decltype(parity)::value;
      __m512 xb[NB];
      for (std::size_t b = 0; b < NB; ++b) xb[b] = _mm512_broadcast_f32x4(_mm_loadu_ps(x + b * in + 4 * g));
      for (std::size_t i = 0; i < S; ++i) {
        const float* v = values + ((s + i) * half + 2 * g) * kSliceRows;
        const __m512 w0 = _mm512_loadu_ps(v), w1 = _mm512_loadu_ps(v + kSliceRows);
        const __m512i second = _mm512_srli_epi32(word[i], 2);
        for (std::size_t b = 0; b < NB; ++b) {
          acc[i][b][p] = _mm512_fmadd_ps(w0, _mm512_permutevar_ps(xb[b], word[i]), acc[i][b][p]);
          acc[i][b][p + 1] = _mm512_fmadd_ps(w1, _mm512_permutevar_ps(xb[b], second), acc[i][b][p + 1]);
        }
        word[i] = _mm512_srli_epi32(word[i], 4);
      }
    };
    const std::size_t g0 = c * kSlice24Groups, g1 = std::min(groups, g0 + kSlice24Groups);
    if (g1 - g0 == kSlice24Groups) {
#pragma GCC unroll 4
      for (std::size_t g = g0; g < g1; g += 2) {
        group(g, std::integral_constant<std::size_t, 0>{});
        group(g + 1, std::integral_constant<std::size_t, 1>{});
      }
    } else {
      std::size_t g = g0;  // g0 is even: parity = g % 2
      for (; g + 2 <= g1; g += 2) {
        group(g, std::integral_constant<std::size_t, 0>{});
        group(g + 1, std::integral_constant<std::size_t, 1>{});
      }
      if (g < g1) group(g, std::integral_constant<std::size_t, 0>{});
    }
  }
  for (std::size_t i = 0; i < S; ++i) {
    const std::size_t r0 = (s + i) * kSliceRows;
    const __mmask16 m = mask16(out - r0);
    for (std::size_t b = 0; b < NB; ++b)
      _mm512_mask_storeu_ps(y + b * out + r0, m,
                            _mm512_add_ps(_mm512_add_ps(acc[i][b][0], acc[i][b][1]),
                                          _mm512_add_ps(acc[i][b][2], acc[i][b][3])));
  }
}

#endif  // AVX-512

// Runs tile<R, NB>(r) over rows [r0, r1) for NB = nb (<= kTileBatch): R rows
// at a time (rows_for(NB)), then the remaining rows one by one.
template <class Tile>
void over_rows(std::size_t nb, std::size_t r0, std::size_t r1, Tile&& tile) {
  with_count(nb, [&](auto b) {
    constexpr std::size_t NB = decltype(b)::value, R = rows_for(NB);
    std::size_t r = r0;
    for (; r + R <= r1; r += R) tile(std::integral_constant<std::size_t, R>{}, b, r);
    for (; r < r1; ++r) tile(std::integral_constant<std::size_t, 1>{}, b, r);
  });
}

}  // namespace
}  // namespace slimgrad::kernels
