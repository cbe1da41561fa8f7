// bfloat16 GEMM (bf16_gemm.hpp) for the avx2 and avx512 units: GotoBLAS
// packing and loops, MR x NR register tiles.
//  - avx512_bf16 (avx512 unit, level avx512_bf16): vdpbf16ps adds the two
//    products of a pair to 16 float32 sums, odd element first; A's pair is
//    a 4-byte broadcast, B's a 64-byte load (16 columns x 2 k). 12 x 32 tile:
//    24 accumulators.
//  - avx512 / avx2 without it: a pair splits into two float32 vectors (odd:
//    the upper halves masked, even: shifted left 16), two FMAs, odd first:
//    the same bits as vdpbf16ps. Tiles 12 x 32 (avx512), 4 x 16 (avx2).
// Packing (AVX-512): rows by 16 x 16 dword transposes (a pair is a dword),
// column pairs by widening two rows; a symmetric operand stored as its lower
// triangle packs rows below the diagonal and column pairs above it. avx2
// packs with the scalar loops.
// Epilogue (bf16_axpby's formula) on each finished tile: from the registers
// on AVX-512, from the stored tile on avx2 and on edge tiles.
// Tails: panels are zero padded to MR rows / NR columns / whole pairs (a
// zero pair adds +0); edge tiles run on a local tile and copy the valid part.
//  - amx (avx512 unit, level amx): 32 x 32 blocks of AMX bfloat16 tiles over
//    the same B panels, A made row-major per 16 pairs (bf16_gemm_amx); its
//    sums follow the tiles' own order (bf16_gemm.hpp).
// Rounding: none beyond the FMAs in the sums (float32); the epilogue rounds
// to bfloat16 (nearest even, NaN kept). No contraction ("exact" area), every
// FMA is explicit.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

#include "slimgrad/bf16_gemm.hpp"
#include "slimgrad/simd.hpp"

#include "kernels_amx_x86.hpp"

#if SLIMGRAD_OPENMP
#define SLIMGRAD_BF16_OMP(x) _Pragma(x)
#else
#define SLIMGRAD_BF16_OMP(x)
#endif

namespace slimgrad::kernels {
namespace bf16gemm {


template <Isa I>
struct Shape {
  static constexpr std::size_t MR = I == Isa::avx512 ? 12 : 4;
  static constexpr std::size_t NR = I == Isa::avx512 ? 32 : 16;
  static_assert(MR <= kBf16MaxMR && NR <= kBf16MaxNR, "bf16_gemm_work_size bounds the panels");
};

inline std::uint32_t pair(std::uint16_t even, std::uint16_t odd) {
  return static_cast<std::uint32_t>(even) | (static_cast<std::uint32_t>(odd) << 16);
}

// The epilogue of a tile (bf16_axpby's formula), pointers at the tile's
// first element.
struct Epi {
  std::uint16_t* out;
  std::size_t ldo;
  const std::uint16_t* x;
  std::size_t ldx;
  float alpha, beta;
};

// dst[p * R + r] = (src[r0 + r][2(p0 + p)], ...+1) of a k-contiguous
// (rows x k) matrix, zero outside.
inline void pack_rows(const std::uint16_t* src, std::size_t ld, std::size_t rows, std::size_t k, std::size_t r0,
                      std::size_t R, std::size_t p0, std::size_t P, std::uint32_t* dst) {
  for (std::size_t r = 0; r < R; ++r) {
    const std::size_t row = r0 + r;
    if (row >= rows) {
      for (std::size_t p = 0; p < P; ++p) dst[p * R + r] = 0;
      continue;
    }
    const std::uint16_t* s = src + row * ld;
    for (std::size_t p = 0; p < P; ++p) {
      const std::size_t kk = 2 * (p0 + p);
      dst[p * R + r] = pair(s[kk], kk + 1 < k ? s[kk + 1] : std::uint16_t(0));
    }
  }
}

// dst[p * R + r] = (src[2(p0 + p)][c0 + r], src[2(p0 + p) + 1][c0 + r]) of a
// (k x cols) matrix, zero outside.
inline void pack_cols(const std::uint16_t* src, std::size_t ld, std::size_t k, std::size_t cols, std::size_t c0,
                      std::size_t R, std::size_t p0, std::size_t P, std::uint32_t* dst) {
  const std::size_t valid = c0 < cols ? std::min(R, cols - c0) : 0;
  for (std::size_t p = 0; p < P; ++p) {
    const std::size_t kk = 2 * (p0 + p);
    const std::uint16_t* even = src + kk * ld + c0;
    const std::uint16_t* odd = kk + 1 < k ? even + ld : nullptr;
    std::uint32_t* d = dst + p * R;
    for (std::size_t r = 0; r < valid; ++r) d[r] = pair(even[r], odd ? odd[r] : std::uint16_t(0));
    for (std::size_t r = valid; r < R; ++r) d[r] = 0;
  }
}

// pack_rows of a symmetric m x m matrix of which only the lower triangle
// (k <= row) is read: element (row, k) is a[row][k] below the diagonal and
// a[k][row] above it.
inline std::uint16_t sym_at(const std::uint16_t* a, std::size_t m, std::size_t row, std::size_t k) {
  if (row >= m || k >= m) return 0;
  return k <= row ? a[row * m + k] : a[k * m + row];
}
inline void pack_sym(const std::uint16_t* a, std::size_t m, std::size_t r0, std::size_t R, std::size_t p0,
                     std::size_t P, std::uint32_t* dst) {
  for (std::size_t p = 0; p < P; ++p) {
    const std::size_t k = 2 * (p0 + p);
    for (std::size_t r = 0; r < R; ++r) dst[p * R + r] = pair(sym_at(a, m, r0 + r, k), sym_at(a, m, r0 + r, k + 1));
  }
}

#if defined(__AVX512F__)
// 16 pairs from pair q of rows row0..row0+nr-1 (zero past `rows`),
// transposed: dst[j * stride + r] for the nr valid lanes r.
inline void transpose_block(const std::uint16_t* src, std::size_t ld, std::size_t rows, std::size_t row0,
                            std::size_t nr, std::size_t q, std::uint32_t* dst, std::size_t stride) {
  __m512i a[16], t[16];
  for (std::size_t i = 0; i < 16; ++i)
    a[i] = i < nr && row0 + i < rows ? _mm512_loadu_si512(src + (row0 + i) * ld + 2 * q) : _mm512_setzero_si512();
  simd::transpose16(a, t);
  const __mmask16 mask = static_cast<__mmask16>((1u << nr) - 1);
  for (std::size_t j = 0; j < 16; ++j) _mm512_mask_storeu_epi32(dst + j * stride, mask, t[j]);
}

// Pair q = (rows 2q, 2q+1) of columns c..c+nr-1 (zero past `cols` or k):
// dst[r] for the nr valid lanes.
inline void column_pairs(const std::uint16_t* src, std::size_t ld, std::size_t k, std::size_t cols, std::size_t c,
                         std::size_t nr, std::size_t q, std::uint32_t* dst) {
  const std::size_t kk = 2 * q, valid = kk < k && c < cols ? std::min(nr, cols - c) : 0;
  const __mmask16 load = static_cast<__mmask16>((1u << valid) - 1), store = static_cast<__mmask16>((1u << nr) - 1);
  const __m512i even = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(load, src + kk * ld + c));
  const __m512i odd = kk + 1 < k ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(load, src + (kk + 1) * ld + c))
                                 : _mm512_setzero_si512();
  _mm512_mask_storeu_epi32(dst, store, _mm512_or_si512(even, _mm512_slli_epi32(odd, 16)));
}

// pack_rows for whole 16-pair blocks (both elements inside k): 16 x 16
// transposes of the rows' dwords; the rest by the scalar loop.
inline void pack_rows_512(const std::uint16_t* src, std::size_t ld, std::size_t rows, std::size_t k, std::size_t r0,
                          std::size_t R, std::size_t p0, std::size_t P, std::uint32_t* dst) {
  const std::size_t whole = k / 2;  // pairs with both elements
  std::size_t pb = 0;
  for (; pb + 16 <= P && p0 + pb + 16 <= whole; pb += 16)
    for (std::size_t rg = 0; rg < R; rg += 16)
      transpose_block(src, ld, rows, r0 + rg, std::min<std::size_t>(16, R - rg), p0 + pb, dst + pb * R + rg, R);
  if (pb < P) pack_rows(src, ld, rows, k, r0, R, p0 + pb, P - pb, dst + pb * R);
}

// pack_cols: the two rows of a pair widened to dwords, the odd one shifted up.
inline void pack_cols_512(const std::uint16_t* src, std::size_t ld, std::size_t k, std::size_t cols, std::size_t c0,
                          std::size_t R, std::size_t p0, std::size_t P, std::uint32_t* dst) {
  for (std::size_t p = 0; p < P; ++p)
    for (std::size_t rg = 0; rg < R; rg += 16)
      column_pairs(src, ld, k, cols, c0 + rg, std::min<std::size_t>(16, R - rg), p0 + p, dst + p * R + rg);
}

// pack_sym in 16-row x 16-pair blocks: below the diagonal the rows'
// transposes, above it the columns' pairs (no transpose), blocks crossing
// it element by element.
inline void pack_sym_512(const std::uint16_t* a, std::size_t m, std::size_t r0, std::size_t R, std::size_t p0,
                         std::size_t P, std::uint32_t* dst) {
  for (std::size_t pb = 0; pb < P; pb += 16) {
    const std::size_t np = std::min<std::size_t>(16, P - pb), k0 = 2 * (p0 + pb), klast = k0 + 2 * np - 1;
    for (std::size_t rg = 0; rg < R; rg += 16) {
      const std::size_t nr = std::min<std::size_t>(16, R - rg), row0 = r0 + rg, rlast = row0 + nr - 1;
      std::uint32_t* d = dst + pb * R + rg;
      if (np == 16 && klast <= row0 && klast < m) {  // every k <= every row: rows, transposed
        transpose_block(a, m, m, row0, nr, k0 / 2, d, R);
      } else if (k0 >= rlast) {  // every k >= every row: columns
        for (std::size_t p = 0; p < np; ++p) column_pairs(a, m, m, m, row0, nr, k0 / 2 + p, d + p * R);
      } else {
        for (std::size_t p = 0; p < np; ++p)
          for (std::size_t r = 0; r < nr; ++r)
            d[p * R + r] = pair(sym_at(a, m, row0 + r, k0 + 2 * p), sym_at(a, m, row0 + r, k0 + 2 * p + 1));
      }
    }
  }
}

// Tile row i, columns 16v..16v+15: out = bf16(alpha x + beta acc), the
// operations of bf16_axpby (a multiply, a multiply, an add; store_bf16).
inline void epi_store(const Epi& e, std::size_t i, std::size_t v, __m512 acc) {
  __m512 r = _mm512_mul_ps(_mm512_set1_ps(e.beta), acc);
  if (e.x) {
    const simd::Vec<float, Isa::avx512> xv = simd::load_bf16<Isa::avx512>(e.x + i * e.ldx + 16 * v);
    r = _mm512_add_ps(_mm512_mul_ps(_mm512_set1_ps(e.alpha), xv.v), r);
  }
  simd::store_bf16(e.out + i * e.ldo + 16 * v, simd::Vec<float, Isa::avx512>{r});
}

// The 12 x 32 tiles' accumulators: C's values (acc_in) or zeros, and at the
// end either the epilogue from registers (the sums are final, C not written)
// or C. Shared by the FMA tile and the vdpbf16ps tile.
template <std::size_t MR>
SLIMGRAD_ALWAYS_INLINE void load_acc(__m512 (&acc)[MR][2], const float* c, std::size_t ldc, bool acc_in) {
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t v = 0; v < 2; ++v)
      acc[i][v] = acc_in ? _mm512_loadu_ps(c + i * ldc + 16 * v) : _mm512_setzero_ps();
}

template <std::size_t MR>
SLIMGRAD_ALWAYS_INLINE void store_acc(const __m512 (&acc)[MR][2], float* c, std::size_t ldc, const Epi* epi) {
  if (epi) {
    for (std::size_t i = 0; i < MR; ++i)
      for (std::size_t v = 0; v < 2; ++v) epi_store(*epi, i, v, acc[i][v]);
    return;
  }
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t v = 0; v < 2; ++v) _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
}

// One 12 x 32 tile over P pairs: c (ldc) = (acc_in ? c : 0) + A B.
template <std::size_t MR>
void tile_f32(const std::uint32_t* ap, const std::uint32_t* bp, std::size_t P, float* c, std::size_t ldc,
              bool acc_in, const Epi* epi) {
  __m512 acc[MR][2];
  load_acc<MR>(acc, c, ldc, acc_in);
  const __m512i hi_mask = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (std::size_t p = 0; p < P; ++p) {
    __m512 bo[2], be[2];
    for (std::size_t v = 0; v < 2; ++v) {
      const __m512i b = _mm512_loadu_si512(bp + p * 32 + 16 * v);
      bo[v] = _mm512_castsi512_ps(_mm512_and_si512(b, hi_mask));
      be[v] = _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
    }
    for (std::size_t i = 0; i < MR; ++i) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(ap[p * MR + i]));
      const __m512 ao = _mm512_castsi512_ps(_mm512_and_si512(a, hi_mask));
      const __m512 ae = _mm512_castsi512_ps(_mm512_slli_epi32(a, 16));
      for (std::size_t v = 0; v < 2; ++v) {
        acc[i][v] = _mm512_fmadd_ps(ao, bo[v], acc[i][v]);
        acc[i][v] = _mm512_fmadd_ps(ae, be[v], acc[i][v]);
      }
    }
  }
  store_acc<MR>(acc, c, ldc, epi);
}

template <std::size_t MR>
__attribute__((target("avx512bf16"))) void tile_dp(const std::uint32_t* ap, const std::uint32_t* bp,
                                                   std::size_t P, float* c, std::size_t ldc, bool acc_in,
                                                   const Epi* epi) {
  __m512 acc[MR][2];
  load_acc<MR>(acc, c, ldc, acc_in);
  for (std::size_t p = 0; p < P; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(bp + p * 32);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(bp + p * 32 + 16);
    for (std::size_t i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(ap[p * MR + i]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], a, b0);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], a, b1);
    }
  }
  store_acc<MR>(acc, c, ldc, epi);
}
#endif

#if defined(__AVX512F__)
// ------------------------------------------------------------------ AMX
// Level amx: blocks of 32 x 32 (2 x 2 tiles of 16 x 16 float32 sums, tiles
// 0-3), per 16 pairs two A tiles (4, 5: 16 rows x 16 pairs, row-major, as
// tdpbf16ps takes its first operand) and two B tiles (6, 7: 16 pairs x 16
// columns, the pair-major panel as packed for the other levels, stride 32
// columns). A is packed pair-major (pack_a) and turned row-major by 16 x 16
// dword transposes; pairs past the block's P are zero up to a multiple of 16.
constexpr std::size_t kAmxBlock = 32;

// The pair-major panel pm ([p][32], P16 pairs) row-major per 16 pairs:
// dst[q * 32 + r * 16 + t] = pm[(q + t) * 32 + r] for q a multiple of 16.
inline void amx_rows(const std::uint32_t* pm, std::size_t P16, std::uint32_t* dst) {
  for (std::size_t q = 0; q < P16; q += kBf16TilePairs)
    for (std::size_t rg = 0; rg < kAmxBlock; rg += 16) {
      __m512i a[16], t[16];
      for (std::size_t i = 0; i < 16; ++i) a[i] = _mm512_loadu_si512(pm + (q + i) * kAmxBlock + rg);
      simd::transpose16(a, t);
      for (std::size_t j = 0; j < 16; ++j) _mm512_storeu_si512(dst + q * kAmxBlock + (rg + j) * 16, t[j]);
    }
}

// One 32 x 32 block over P16 pairs: c (ldc floats) = (acc_in ? c : 0) + A B.
__attribute__((target("amx-tile,amx-bf16"))) inline void tile_amx(const std::uint32_t* aa, const std::uint32_t* bp,
                                                                  std::size_t P16, float* c, std::size_t ldc,
                                                                  bool acc_in) {
  const long ld = static_cast<long>(ldc * sizeof(float));
  if (acc_in) {
    _tile_loadd(0, c, ld);
    _tile_loadd(1, c + 16, ld);
    _tile_loadd(2, c + 16 * ldc, ld);
    _tile_loadd(3, c + 16 * ldc + 16, ld);
  } else {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  for (std::size_t q = 0; q < P16; q += kBf16TilePairs) {
    _tile_loadd(4, aa + q * kAmxBlock, 64);
    _tile_loadd(5, aa + q * kAmxBlock + 16 * 16, 64);
    _tile_loadd(6, bp + q * kAmxBlock, kAmxBlock * 4);
    _tile_loadd(7, bp + q * kAmxBlock + 16, kAmxBlock * 4);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, c, ld);
  _tile_stored(1, c + 16, ld);
  _tile_stored(2, c + 16 * ldc, ld);
  _tile_stored(3, c + 16 * ldc + 16, ld);
}

__attribute__((target("amx-tile"))) inline void amx_release() { _tile_release(); }
#endif

#if defined(__AVX2__)
// One 4 x 16 tile (avx2 unit).
inline void tile_avx2(const std::uint32_t* ap, const std::uint32_t* bp, std::size_t P, float* c, std::size_t ldc,
                      bool acc_in) {
  constexpr std::size_t MR = 4;
  __m256 acc[MR][2];
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t v = 0; v < 2; ++v)
      acc[i][v] = acc_in ? _mm256_loadu_ps(c + i * ldc + 8 * v) : _mm256_setzero_ps();
  const __m256i hi_mask = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
  for (std::size_t p = 0; p < P; ++p) {
    __m256 bo[2], be[2];
    for (std::size_t v = 0; v < 2; ++v) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bp + p * 16 + 8 * v));
      bo[v] = _mm256_castsi256_ps(_mm256_and_si256(b, hi_mask));
      be[v] = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
    }
    for (std::size_t i = 0; i < MR; ++i) {
      const __m256i a = _mm256_set1_epi32(static_cast<int>(ap[p * MR + i]));
      const __m256 ao = _mm256_castsi256_ps(_mm256_and_si256(a, hi_mask));
      const __m256 ae = _mm256_castsi256_ps(_mm256_slli_epi32(a, 16));
      for (std::size_t v = 0; v < 2; ++v) {
        acc[i][v] = _mm256_fmadd_ps(ao, bo[v], acc[i][v]);
        acc[i][v] = _mm256_fmadd_ps(ae, be[v], acc[i][v]);
      }
    }
  }
  for (std::size_t i = 0; i < MR; ++i)
    for (std::size_t v = 0; v < 2; ++v) _mm256_storeu_ps(c + i * ldc + 8 * v, acc[i][v]);
}
#endif

template <Isa I>
void pack_a(const std::uint16_t* src, std::size_t ld, std::size_t rows, std::size_t k, std::size_t r0, std::size_t R,
            std::size_t p0, std::size_t P, bool sym, std::uint32_t* dst) {
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) {
    if (sym) return pack_sym_512(src, rows, r0, R, p0, P, dst);
    return pack_rows_512(src, ld, rows, k, r0, R, p0, P, dst);
  }
#endif
  if (sym) return pack_sym(src, rows, r0, R, p0, P, dst);
  pack_rows(src, ld, rows, k, r0, R, p0, P, dst);
}

template <Isa I>
void pack_b(const std::uint16_t* src, std::size_t ld, std::size_t k, std::size_t cols, std::size_t c0, std::size_t R,
            std::size_t p0, std::size_t P, std::uint32_t* dst) {
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) return pack_cols_512(src, ld, k, cols, c0, R, p0, P, dst);
#endif
  pack_cols(src, ld, k, cols, c0, R, p0, P, dst);
}

// A full tile; with epi (last k block), the epilogue instead of storing C
// (avx512 from registers; avx2 stores C and runs bf16_axpby on its rows).
template <Isa I>
void tile(const std::uint32_t* ap, const std::uint32_t* bp, std::size_t P, float* c, std::size_t ldc, bool acc_in,
          bool dp, const Epi* epi) {
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) {
    if (dp) return tile_dp<Shape<I>::MR>(ap, bp, P, c, ldc, acc_in, epi);
    return tile_f32<Shape<I>::MR>(ap, bp, P, c, ldc, acc_in, epi);
  }
#endif
#if defined(__AVX2__)
  if constexpr (I == Isa::avx2) {
    tile_avx2(ap, bp, P, c, ldc, acc_in);
    if (epi)
      for (std::size_t i = 0; i < Shape<I>::MR; ++i)
        bf16_axpby<I>(epi->out + i * epi->ldo, c + i * ldc, epi->x ? epi->x + i * epi->ldx : nullptr, Shape<I>::NR,
                      epi->alpha, epi->beta);
  }
#endif
  (void)ap, (void)bp, (void)P, (void)c, (void)ldc, (void)acc_in, (void)dp, (void)epi;
}

struct FreeAligned {
  void operator()(std::uint32_t* p) const { std::free(p); }
};
inline std::unique_ptr<std::uint32_t, FreeAligned> alloc_pairs(std::size_t n) {
  const std::size_t bytes = ((n * sizeof(std::uint32_t) + 63) / 64) * 64;
  return std::unique_ptr<std::uint32_t, FreeAligned>(static_cast<std::uint32_t*>(std::aligned_alloc(64, bytes)));
}

}  // namespace bf16gemm

namespace bf16gemm {
// Column panel q (NR columns of op(B), pairs [p0, p0 + P)) into dst.
template <Isa I>
void pack_b_panel(const Bf16Gemm& g, std::size_t q, std::size_t NR, std::size_t p0, std::size_t P,
                  std::uint32_t* dst) {
  if (g.trans_b) return pack_a<I>(g.b, g.ldb, g.n, g.k, q * NR, NR, p0, P, g.sym_b, dst);
  pack_b<I>(g.b, g.ldb, g.k, g.n, q * NR, NR, p0, P, dst);
}

// The epilogue of the block at (i0, j0).
inline Epi epi_at(const Bf16Gemm& g, std::size_t i0, std::size_t j0) {
  return Epi{g.out + i0 * g.ldo + j0, g.ldo, g.x ? g.x + i0 * g.ldx + j0 : nullptr, g.ldx, g.alpha, g.beta};
}

// An edge block (mr x nr inside an MR x NR tile): run(t, MR x NR local
// block, ld NR) computes the whole tile from C's partial sums (acc_in) or
// zeros, its valid part goes back to C, and the epilogue (last k block) runs
// on that part.
template <Isa I, std::size_t MR, std::size_t NR, class Run>
void edge_block(const Bf16Gemm& g, std::size_t i0, std::size_t mr, std::size_t j0, std::size_t nr, bool acc_in,
                bool last, Run&& run) {
  float* c = g.c + i0 * g.ldc + j0;
  alignas(64) float t[MR * NR] = {};
  if (acc_in)
    for (std::size_t i = 0; i < mr; ++i) std::memcpy(t + i * NR, c + i * g.ldc, nr * sizeof(float));
  run(t);
  for (std::size_t i = 0; i < mr; ++i) std::memcpy(c + i * g.ldc, t + i * NR, nr * sizeof(float));
  if (g.out && last)
    for (std::size_t i = i0; i < i0 + mr; ++i)
      bf16_axpby<I>(g.out + i * g.ldo + j0, g.c + i * g.ldc + j0, g.x ? g.x + i * g.ldx + j0 : nullptr, nr, g.alpha,
                    g.beta);
}

// body(i0, mr, j0, nr, iq, jq) for every MR x NR block of C (edge blocks
// smaller) but those entirely above the diagonal of a `lower` product:
// column panels go to the threads of the enclosing parallel region
// dynamically, rows in order.
template <class Body>
void for_each_block(const Bf16Gemm& g, std::size_t MR, std::size_t NR, Body&& body) {
  const std::size_t mp = (g.m + MR - 1) / MR, np = (g.n + NR - 1) / NR;
  SLIMGRAD_BF16_OMP("omp for schedule(dynamic, 1)")
  for (std::ptrdiff_t jq = 0; jq < static_cast<std::ptrdiff_t>(np); ++jq) {
    const std::size_t j0 = static_cast<std::size_t>(jq) * NR, nr = std::min(NR, g.n - j0);
    for (std::size_t iq = 0; iq < mp; ++iq) {
      const std::size_t i0 = iq * MR, mr = std::min(MR, g.m - i0);
      if (g.lower && i0 + mr <= j0) continue;  // entirely above the diagonal
      body(i0, mr, j0, nr, iq, static_cast<std::size_t>(jq));
    }
  }
}
}  // namespace bf16gemm

#if defined(__AVX512F__)
// Level amx (see tile_amx): the loops of bf16_gemm below with 32 x 32 blocks.
inline void bf16_gemm_amx(const Bf16Gemm& g) {
  using namespace bf16gemm;
  constexpr std::size_t B = kAmxBlock, TP = kBf16TilePairs;
  const std::size_t kp = (g.k + 1) / 2;
  const std::size_t mp = (g.m + B - 1) / B, np = (g.n + B - 1) / B;
  const std::size_t kc16 = (std::min(kKcPairs, kp) + TP - 1) / TP * TP;
  std::unique_ptr<std::uint32_t, FreeAligned> own;
  if (!g.work) own = alloc_pairs(bf16_gemm_work_size(g.m, g.n, g.k));
  std::uint32_t* const ab = g.work ? g.work : own.get();
  std::uint32_t* const bb = ab + mp * B * kc16;
  const int threads = std::max(1, g.threads);
  (void)threads;
  SLIMGRAD_BF16_OMP("omp parallel num_threads(threads) if (threads > 1)")
  {
    amx_configure();  // per thread: the tile state is a thread's
    alignas(64) std::uint32_t pm[B * kKcPairs];
    for (std::size_t p0 = 0; p0 < kp; p0 += kKcPairs) {
      const std::size_t P = std::min(kKcPairs, kp - p0), P16 = (P + TP - 1) / TP * TP;
      SLIMGRAD_BF16_OMP("omp for schedule(static)")
      for (std::ptrdiff_t q = 0; q < static_cast<std::ptrdiff_t>(mp); ++q) {
        pack_a<Isa::avx512>(g.a, g.lda, g.m, g.k, q * B, B, p0, P, g.sym_a, pm);
        std::fill(pm + P * B, pm + P16 * B, 0u);
        amx_rows(pm, P16, ab + q * B * P16);
      }
      SLIMGRAD_BF16_OMP("omp for schedule(static)")
      for (std::ptrdiff_t q = 0; q < static_cast<std::ptrdiff_t>(np); ++q) {
        std::uint32_t* d = bb + q * B * P16;
        pack_b_panel<Isa::avx512>(g, q, B, p0, P, d);
        std::fill(d + P * B, d + P16 * B, 0u);
      }
      const bool acc_in = p0 > 0, last = p0 + P == kp;
      for_each_block(g, B, B, [&](std::size_t i0, std::size_t mr, std::size_t j0, std::size_t nr, std::size_t iq,
                                  std::size_t jq) {
        const std::uint32_t* aa = ab + iq * B * P16;
        const std::uint32_t* bp = bb + jq * B * P16;
        float* c = g.c + i0 * g.ldc + j0;
        if (mr == B && nr == B) {
          tile_amx(aa, bp, P16, c, g.ldc, acc_in);
          if (g.out && last) {  // the epilogue from the block just stored (in L1), inline
            const Epi epi = epi_at(g, i0, j0);
            for (std::size_t i = 0; i < B; ++i)
              for (std::size_t v = 0; v < B / 16; ++v) epi_store(epi, i, v, _mm512_loadu_ps(c + i * g.ldc + 16 * v));
          }
          return;
        }
        edge_block<Isa::avx512, B, B>(g, i0, mr, j0, nr, acc_in, last,
                                      [&](float* t) { tile_amx(aa, bp, P16, t, B, acc_in); });
      });
    }
    amx_release();
  }
}
#endif

template <Isa I>
void bf16_gemm(const Bf16Gemm& g, Bf16Dot dot) {
  using namespace bf16gemm;
  constexpr std::size_t MR = Shape<I>::MR, NR = Shape<I>::NR;
  if (g.m == 0 || g.n == 0) return;
  const std::size_t kp = (g.k + 1) / 2;
  if (kp == 0) {
    for (std::size_t i = 0; i < g.m; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.n, 0.0f);
    return;
  }
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512)
    if (dot == Bf16Dot::amx) return bf16_gemm_amx(g);
#endif
  const bool dp = dot == Bf16Dot::vdpbf16ps;
  const std::size_t mp = (g.m + MR - 1) / MR, np = (g.n + NR - 1) / NR, kc = std::min(kKcPairs, kp);
  std::unique_ptr<std::uint32_t, FreeAligned> own;
  if (!g.work) own = alloc_pairs(bf16_gemm_work_size(g.m, g.n, g.k));
  std::uint32_t* const ab = g.work ? g.work : own.get();
  std::uint32_t* const bb = ab + mp * MR * kc;
  const auto ptrdiff = [](std::size_t x) { return static_cast<std::ptrdiff_t>(x); };
  (void)ptrdiff;
  const int threads = std::max(1, g.threads);
  (void)threads;
  SLIMGRAD_BF16_OMP("omp parallel num_threads(threads) if (threads > 1)")
  {
    for (std::size_t p0 = 0; p0 < kp; p0 += kKcPairs) {
      const std::size_t P = std::min(kKcPairs, kp - p0);
      SLIMGRAD_BF16_OMP("omp for schedule(static)")
      for (std::ptrdiff_t q = 0; q < ptrdiff(mp); ++q)
        pack_a<I>(g.a, g.lda, g.m, g.k, q * MR, MR, p0, P, g.sym_a, ab + q * MR * P);
      SLIMGRAD_BF16_OMP("omp for schedule(static)")
      for (std::ptrdiff_t q = 0; q < ptrdiff(np); ++q) pack_b_panel<I>(g, q, NR, p0, P, bb + q * NR * P);
      const bool acc_in = p0 > 0, last = p0 + P == kp;
      for_each_block(g, MR, NR, [&](std::size_t i0, std::size_t mr, std::size_t j0, std::size_t nr, std::size_t iq,
                                    std::size_t jq) {
        const std::uint32_t* ap = ab + iq * MR * P;
        const std::uint32_t* bp = bb + jq * NR * P;
        float* c = g.c + i0 * g.ldc + j0;
        if (mr == MR && nr == NR) {
          const Epi epi = epi_at(g, i0, j0);
          return tile<I>(ap, bp, P, c, g.ldc, acc_in, dp, g.out && last ? &epi : nullptr);
        }
        edge_block<I, MR, NR>(g, i0, mr, j0, nr, acc_in, last,
                              [&](float* t) { tile<I>(ap, bp, P, t, NR, acc_in, dp, nullptr); });
      });
    }
  }
}

template <Isa I>
void bf16_axpby(std::uint16_t* out, const float* acc, const std::uint16_t* x, std::size_t n, float alpha,
                float beta) {
  using V = simd::Vec<float, I>;
  constexpr std::size_t W = V::width;
  const V va = V::set1(alpha), vb = V::set1(beta);
  simd::for_each_vec<V>(n, [&](std::size_t i, std::size_t k) {
    V v = vb * simd::load_n<V>(acc + i, k);
    std::uint16_t tmp[W] = {};
    if (x) {
      if (k < W) std::memcpy(tmp, x + i, k * sizeof(std::uint16_t));
      v = va * simd::load_bf16<I>(k < W ? tmp : x + i) + v;
    }
    if (k == W) return simd::store_bf16(out + i, v);
    simd::store_bf16(tmp, v);
    std::memcpy(out + i, tmp, k * sizeof(std::uint16_t));
  });
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void bf16_gemm<SLIMGRAD_UNIT_ISA>(const Bf16Gemm&, Bf16Dot);
template void bf16_axpby<SLIMGRAD_UNIT_ISA>(std::uint16_t*, const float*, const std::uint16_t*, std::size_t, float,
                                            float);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
