// The GPTQ / SparseGPT block update C += A * B (gptq.hpp) written once
// against simd.hpp, instantiated per ISA by the generated units.
//  - Register tile: NV vectors of rows (A's columns are contiguous: one load
//    per vector) by NC columns of B (one broadcast each, B row-major), NV * NC
//    double accumulators loaded from C, one vfmadd per (k, vector, column),
//    stored back once. avx512: 4 x 8 rows by 6 columns (24 zmm accumulators,
//    10 loads per 24 FMAs), 2 x 8 by 12 for 16 leftover rows; avx2: 2 x 4
//    rows by 6 columns (12 ymm).
//  - Tails: rows left over after whole vectors run the same chain with
//    std::fma one row at a time (a hardware FMA in these units); columns left
//    over use 1-column tiles.
//  - Rounding: each element is fma(a, b, acc) for k in order, as the scalar
//    reference: identical results on every ISA.
#pragma once

#include <cmath>

#include "slimgrad/gptq.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

template <Isa I, std::size_t NV, std::size_t NC>
inline void gemm_tile(double* c, std::size_t ldc, const double* a, std::size_t lda, const double* b,
                      std::size_t ldb, std::size_t kc) {
  using D = Vec<double, I>;
  constexpr std::size_t W = D::width;
  D acc[NV][NC];
#pragma GCC unroll 16
  for (std::size_t j = 0; j < NC; ++j)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) acc[v][j] = D::load(c + j * ldc + v * W);
  for (std::size_t k = 0; k < kc; ++k) {
    D av[NV];
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) av[v] = D::load(a + k * lda + v * W);
    const double* bk = b + k * ldb;
#pragma GCC unroll 16
    for (std::size_t j = 0; j < NC; ++j) {
      const D bv = D::set1(bk[j]);
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) acc[v][j] = fma(av[v], bv, acc[v][j]);
    }
  }
#pragma GCC unroll 16
  for (std::size_t j = 0; j < NC; ++j)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) acc[v][j].store(c + j * ldc + v * W);
}

// All columns of one band of NV vectors of rows.
template <Isa I, std::size_t NV>
inline void gemm_band(double* c, std::size_t ldc, const double* a, std::size_t lda, const double* b,
                      std::size_t ldb, std::size_t n, std::size_t kc) {
  constexpr std::size_t NC = I == Isa::avx512 && NV < 4 ? 12 : 6;  // NV * NC <= 24 accumulators
  std::size_t j = 0;
  for (; j + NC <= n; j += NC) gemm_tile<I, NV, NC>(c + j * ldc, ldc, a, lda, b + j, ldb, kc);
  for (; j < n; ++j) gemm_tile<I, NV, 1>(c + j * ldc, ldc, a, lda, b + j, ldb, kc);
}

}  // namespace

template <Isa I>
void gemm_acc(double* c, std::size_t ldc, const double* a, std::size_t lda, const double* b, std::size_t ldb,
              std::size_t rows, std::size_t n, std::size_t kc) {
  constexpr std::size_t W = Vec<double, I>::width;
  std::size_t r = 0;
  if constexpr (I == Isa::avx512)
    for (; r + 4 * W <= rows; r += 4 * W) gemm_band<I, 4>(c + r, ldc, a + r, lda, b, ldb, n, kc);
  for (; r + 2 * W <= rows; r += 2 * W) gemm_band<I, 2>(c + r, ldc, a + r, lda, b, ldb, n, kc);
  for (; r + W <= rows; r += W) gemm_band<I, 1>(c + r, ldc, a + r, lda, b, ldb, n, kc);
  for (; r < rows; ++r)
    for (std::size_t j = 0; j < n; ++j) {
      double acc = c[r + j * ldc];
      for (std::size_t k = 0; k < kc; ++k) acc = std::fma(a[r + k * lda], b[k * ldb + j], acc);
      c[r + j * ldc] = acc;
    }
}

}  // namespace slimgrad::kernels

#define SLIMGRAD_GPTQ_INSTANTIATE(I)                                                                         \
  template void slimgrad::kernels::gemm_acc<I>(double*, std::size_t, const double*, std::size_t, const double*, \
                                               std::size_t, std::size_t, std::size_t, std::size_t);

#ifdef SLIMGRAD_UNIT_ISA
SLIMGRAD_GPTQ_INSTANTIATE(SLIMGRAD_UNIT_ISA)
#endif  // SLIMGRAD_UNIT_ISA
