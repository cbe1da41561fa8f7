// Sparse weight product kernels (see sparse.hpp), written once and compiled
// per ISA by kernels_sparse_{scalar,avx2,avx512}.cpp.
//  - Portable path (scalar oracle; also the avx2 level for now, compiled
//    with AVX2 flags, where the compiler may vectorize the batch loop): one
//    float accumulator per y entry, summed in k order. The 2:4 columns of a
//    row are decoded once into a small buffer and reused for every batch row.
//  - AVX-512 path: a 2:4 chunk is 16 kept values = 32 columns of x; the 16
//    positions (32 bits) become a permutation index, vpermt2ps picks the 16
//    needed x values out of two 16-float loads, and one FMA does 16 products.
//    CSR chunks gather x with vgatherdps. Up to 8 batch rows share each
//    decoded chunk (and its weight load); 2:4 also splits k into blocks of
//    256 values so the x tile stays in L1 while a chunk of W rows runs over it.
//  - Tails: masked loads (zero lanes add 0 * 0), never reading past a buffer.
//  - Rounding: float32 FMA, 16 lane sums reduced in a fixed tree
//    (_mm512_reduce_add_ps), k blocks added to y in order: results depend on
//    the shapes only, not on threads; they differ from the scalar oracle by
//    float32 summation order (tests compare both to a float64 reference).
#pragma once

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "slimgrad/sparse.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace slimgrad::kernels {
namespace {

inline unsigned position_at(const std::uint8_t* positions, std::size_t v) {
  return (positions[v >> 2] >> (2 * (v & 3))) & 3u;
}

void gemm24_portable(const float* x, std::size_t batch, std::size_t in, const float* values,
                     const std::uint8_t* positions, std::size_t out, std::size_t r0, std::size_t r1, float* y) {
  const std::size_t half = in / 2;
  std::vector<std::uint32_t> cols(half);
  for (std::size_t r = r0; r < r1; ++r) {
    const float* w = values + r * half;
    for (std::size_t k = 0; k < half; ++k)
      cols[k] = static_cast<std::uint32_t>(4 * (k >> 1) + position_at(positions, r * half + k));
    for (std::size_t b = 0; b < batch; ++b) {
      const float* xb = x + b * in;
      float acc = 0.0f;
      for (std::size_t k = 0; k < half; ++k) acc += w[k] * xb[cols[k]];
      y[b * out + r] = acc;
    }
  }
}

template <class P>
void spmm_csr_portable(const float* x, std::size_t batch, std::size_t in, const float* data,
                       const std::int32_t* cols, const P* indptr, std::size_t out, std::size_t r0, std::size_t r1,
                       float* y) {
  for (std::size_t r = r0; r < r1; ++r) {
    const auto p0 = static_cast<std::size_t>(indptr[r]), p1 = static_cast<std::size_t>(indptr[r + 1]);
    for (std::size_t b = 0; b < batch; ++b) {
      const float* xb = x + b * in;
      float acc = 0.0f;
      for (std::size_t p = p0; p < p1; ++p) acc += data[p] * xb[cols[p]];
      y[b * out + r] = acc;
    }
  }
}

#if defined(__AVX512F__)
constexpr std::size_t kBatchTile = 8;
constexpr std::size_t kValueBlock = 256;  // 2:4 values per k block: 512 columns, 2 KB of each x row

inline __mmask16 low_mask(std::size_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1);
}

// 32 bits of positions for values v .. v + t - 1 (t <= 16, v even), never
// reading past the nbytes of the positions array.
inline std::uint32_t positions_bits(const std::uint8_t* positions, std::size_t nbytes, std::size_t v,
                                    std::size_t t) {
  const std::size_t first = v >> 2;
  std::uint64_t bits = 0;
  if (first + 8 <= nbytes) {
    std::memcpy(&bits, positions + first, 8);
  } else {
    const std::size_t last = (v + t - 1) >> 2;
    std::memcpy(&bits, positions + first, last - first + 1);
  }
  return static_cast<std::uint32_t>(bits >> (2 * (v & 3)));
}

// One W row r against NB batch rows, values [k0, k1) of the row.
// x points at column 2 * k0 of the first batch row; ldx is the batch row stride.
template <std::size_t NB>
void tile24(const float* x, std::size_t ldx, const float* wrow, const std::uint8_t* positions, std::size_t nbytes,
            std::size_t vrow, std::size_t k0, std::size_t k1, float* y, std::size_t out, bool first) {
  const __m512i shifts = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i base = _mm512_setr_epi32(0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28);
  const __m512i three = _mm512_set1_epi32(3);
  // One chunk: 16 values (t of them valid) into acc.
  auto chunk = [&](std::size_t k, __m512* acc) {
    const std::size_t t = std::min<std::size_t>(16, k1 - k);
    const auto bits = static_cast<int>(positions_bits(positions, nbytes, vrow + k, t));
    const __m512i idx =
        _mm512_add_epi32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(bits), shifts), three), base);
    const float* xc = x + 2 * (k - k0);  // column of value k: 4 * (k / 2), k even
    if (t == 16) {
      const __m512 w = _mm512_loadu_ps(wrow + k);
      for (std::size_t j = 0; j < NB; ++j) {
        const __m512 lo = _mm512_loadu_ps(xc + j * ldx), hi = _mm512_loadu_ps(xc + j * ldx + 16);
        acc[j] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(lo, idx, hi), acc[j]);
      }
    } else {
      const __m512 w = _mm512_maskz_loadu_ps(low_mask(t), wrow + k);
      const __mmask16 m0 = low_mask(2 * t), m1 = low_mask(2 * t > 16 ? 2 * t - 16 : 0);
      for (std::size_t j = 0; j < NB; ++j) {
        const __m512 lo = _mm512_maskz_loadu_ps(m0, xc + j * ldx), hi = _mm512_maskz_loadu_ps(m1, xc + j * ldx + 16);
        acc[j] = _mm512_fmadd_ps(w, _mm512_permutex2var_ps(lo, idx, hi), acc[j]);
      }
    }
  };
  // Two accumulator sets, even and odd chunks: with few batch rows one FMA
  // chain per row would wait on the FMA latency (4 cycles) every chunk.
  __m512 acc[NB], odd[NB];
  for (std::size_t j = 0; j < NB; ++j) acc[j] = odd[j] = _mm512_setzero_ps();
  std::size_t k = k0;
  for (; k + 32 <= k1; k += 32) {
    chunk(k, acc);
    chunk(k + 16, odd);
  }
  for (; k < k1; k += 16) chunk(k, acc);
  for (std::size_t j = 0; j < NB; ++j) acc[j] = _mm512_add_ps(acc[j], odd[j]);
  for (std::size_t j = 0; j < NB; ++j) {
    const float s = _mm512_reduce_add_ps(acc[j]);
    y[j * out] = first ? s : y[j * out] + s;
  }
}

template <class P, std::size_t NB>
void tile_csr(const float* x, std::size_t in, const float* data, const std::int32_t* cols, std::size_t p0,
              std::size_t p1, float* y, std::size_t out) {
  __m512 acc[NB];
  for (std::size_t j = 0; j < NB; ++j) acc[j] = _mm512_setzero_ps();
  std::size_t p = p0;
  for (; p + 16 <= p1; p += 16) {
    const __m512i idx = _mm512_loadu_si512(cols + p);
    const __m512 w = _mm512_loadu_ps(data + p);
    for (std::size_t j = 0; j < NB; ++j)
      acc[j] = _mm512_fmadd_ps(w, _mm512_i32gather_ps(idx, x + j * in, 4), acc[j]);
  }
  if (p < p1) {
    const __mmask16 m = low_mask(p1 - p);
    const __m512i idx = _mm512_maskz_loadu_epi32(m, cols + p);
    const __m512 w = _mm512_maskz_loadu_ps(m, data + p);
    for (std::size_t j = 0; j < NB; ++j)
      acc[j] = _mm512_fmadd_ps(w, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, x + j * in, 4), acc[j]);
  }
  for (std::size_t j = 0; j < NB; ++j) y[j * out] = _mm512_reduce_add_ps(acc[j]);
}

// Calls fn(std::integral_constant<size_t, nb>) for 1 <= nb <= kBatchTile.
template <class Fn>
void with_tile(std::size_t nb, Fn&& fn) {
  switch (nb) {
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
#endif

}  // namespace

template <Isa I>
void gemm24_rows(const float* x, std::size_t batch, std::size_t in, const float* values,
                 const std::uint8_t* positions, std::size_t out, std::size_t r0, std::size_t r1, float* y) {
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) {
    const std::size_t half = in / 2, nbytes = (out * half + 3) / 4;
    if (half == 0) {
      for (std::size_t b = 0; b < batch; ++b) std::fill(y + b * out + r0, y + b * out + r1, 0.0f);
      return;
    }
    if (batch <= kBatchTile) {
      // One batch tile: x (at most 8 rows) is read from L1/L2 as it is, and
      // each W row is streamed once from start to end (k blocks here would
      // turn one stream per row into 32 short strided ones: measured slower).
      with_tile(batch, [&](auto nb) {
        for (std::size_t r = r0; r < r1; ++r)
          tile24<decltype(nb)::value>(x, in, values + r * half, positions, nbytes, r * half, 0, half, y + r, out,
                                      true);
      });
      return;
    }
    // Larger batches: the x tile (8 rows x 512 columns) is copied to a
    // contiguous 16 KB buffer that stays in L1 while every W row of the chunk
    // runs over it (rows of x are 4 * in bytes apart: for in = 4096 they all
    // map to the same L1 sets and evict each other).
    alignas(64) float xt[kBatchTile * 2 * kValueBlock];
    for (std::size_t k0 = 0; k0 < half; k0 += kValueBlock) {
      const std::size_t k1 = std::min(half, k0 + kValueBlock), cols = 2 * (k1 - k0);
      for (std::size_t b0 = 0; b0 < batch; b0 += kBatchTile) {
        const std::size_t nb_rows = std::min(kBatchTile, batch - b0);
        for (std::size_t j = 0; j < nb_rows; ++j)
          std::memcpy(xt + j * 2 * kValueBlock, x + (b0 + j) * in + 2 * k0, cols * sizeof(float));
        with_tile(nb_rows, [&](auto nb) {
          for (std::size_t r = r0; r < r1; ++r)
            tile24<decltype(nb)::value>(xt, 2 * kValueBlock, values + r * half, positions, nbytes, r * half, k0,
                                        k1, y + b0 * out + r, out, k0 == 0);
        });
      }
    }
    return;
  }
#endif
  gemm24_portable(x, batch, in, values, positions, out, r0, r1, y);
}

template <Isa I, class P>
void spmm_csr_rows(const float* x, std::size_t batch, std::size_t in, const float* data, const std::int32_t* cols,
                   const P* indptr, std::size_t out, std::size_t r0, std::size_t r1, float* y) {
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) {
    for (std::size_t b0 = 0; b0 < batch; b0 += kBatchTile) {
      with_tile(std::min(kBatchTile, batch - b0), [&](auto nb) {
        for (std::size_t r = r0; r < r1; ++r)
          tile_csr<P, decltype(nb)::value>(x + b0 * in, in, data, cols, static_cast<std::size_t>(indptr[r]),
                                           static_cast<std::size_t>(indptr[r + 1]), y + b0 * out + r, out);
      });
    }
    return;
  }
#endif
  spmm_csr_portable(x, batch, in, data, cols, indptr, out, r0, r1, y);
}

}  // namespace slimgrad::kernels

// The generated per-ISA units (CMakeLists.txt, SLIMGRAD_KERNEL_AREAS) define
// SLIMGRAD_UNIT_ISA and instantiate here.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void gemm24_rows<SLIMGRAD_UNIT_ISA>(const float*, std::size_t, std::size_t, const float*,
                                             const std::uint8_t*, std::size_t, std::size_t, std::size_t, float*);
template void spmm_csr_rows<SLIMGRAD_UNIT_ISA, std::int32_t>(const float*, std::size_t, std::size_t, const float*,
                                                             const std::int32_t*, const std::int32_t*, std::size_t,
                                                             std::size_t, std::size_t, float*);
template void spmm_csr_rows<SLIMGRAD_UNIT_ISA, std::int64_t>(const float*, std::size_t, std::size_t, const float*,
                                                             const std::int32_t*, const std::int64_t*, std::size_t,
                                                             std::size_t, std::size_t, float*);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
