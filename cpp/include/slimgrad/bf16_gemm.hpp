// bfloat16 GEMM with float32 accumulation, and the bfloat16 Newton-Schulz
// iteration of Muon (torch.optim.Muon's, which casts to bfloat16) built on it.
//
// GEMM: C (m x n, float32) = A (m x k) * op(B), A and B bfloat16 row-major
// (stored as uint16, the upper half of a float32), op(B) = B^T for an
// (n x k) B (trans_b, "NT": both operands k-contiguous) or B for a (k x n)
// B ("NN"). k is walked in pairs (2p, 2p+1), the unit of AVX512_BF16's
// vdpbf16ps; numeric policy, the same on every ISA level and thread count
// (a fixed summation order per element):
//     acc = 0; for p in 0..ceil(k/2)-1:
//         acc = fma(a[2p+1], b[2p+1], acc); acc = fma(a[2p], b[2p], acc)
// (the odd element first: vdpbf16ps's order, checked on Zen 4; a missing
// odd element of an odd k is 0). Products of two bfloat16 are exact in
// float32, so each step is one rounding. Levels: avx512_bf16 (vdpbf16ps),
// avx512 / avx2 (bfloat16 -> float32 by a shift, two FMAs), scalar (plain
// loops, the reference). Exception: vdpbf16ps flushes subnormal inputs and
// results to zero (DAZ/FTZ), the others do not; Muon's normalized matrices
// have no values near 1e-38.
// Level amx sums in AMX's own order (tdpbf16ps, 16 pairs per instruction
// and tile row, k blocks in order; subnormals flushed as by vdpbf16ps):
// none of the orders emulated on Emerald Rapids (pairs rounded then added,
// k order, a tree, the exact sum rounded once) matched it, so its bits are
// its own: the same for any thread count, layout and block position, within
// the float32 summation bound like the other levels (tested), other bits
// than theirs. Pairs past k are zero.
//
// Packed GotoBLAS layout (kernels_bf16gemm_simd.hpp): for each block of
// kKcPairs pairs, A is packed in MR-row panels and B in NR-column panels
// (uint32 pairs, zero padded), then an MR x NR register tile runs per
// (row panel, column panel); threads take column panels (OpenMP), partial
// sums of earlier k blocks are read back from C. `lower` (m == n, for
// C = S S^T): only tiles touching the lower triangle (j <= i) are computed,
// the entries above it are unspecified (a symmetric result is then used
// through sym_a / sym_b, which read only the lower triangle).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

struct Bf16Gemm {
  const std::uint16_t* a;
  std::size_t lda;
  const std::uint16_t* b;
  std::size_t ldb;
  bool trans_b;
  float* c;
  std::size_t ldc;
  std::size_t m, n, k;
  bool lower;
  int threads;  // OpenMP threads for this product (1 inside a task)
  // Optional epilogue, applied to each tile once its sum is complete:
  // out[i][j] = bf16(alpha * x[i][j] + beta * sum[i][j]) (bf16_axpby's
  // operations; x may be null); C then holds unspecified partial sums (the
  // AVX-512 tiles apply it from registers). With `lower`, on every computed
  // tile (entries above the diagonal unspecified).
  std::uint16_t* out = nullptr;
  std::size_t ldo = 0;
  const std::uint16_t* x = nullptr;
  std::size_t ldx = 0;
  float alpha = 0.0f, beta = 1.0f;
  // Symmetric operands stored as their lower triangle only (m == k for a,
  // n == k and trans_b for b, ld = k): element (i, k) above the diagonal is
  // read at (k, i); the upper triangle is never read.
  bool sym_a = false, sym_b = false;
  // Packing workspace of bf16_gemm_work_size(m, n, k) uint32, 64-byte
  // aligned, or null (allocated per call).
  std::uint32_t* work = nullptr;
};

// Pairs per k block: a 32-column B panel of 192 pairs is 24 KiB (L1), the
// A panels of a 384-row matrix 288 KiB (L2).
inline constexpr std::size_t kKcPairs = 192;
// Bounds of the register tile over all ISA levels (rows, columns; AMX's
// 2 x 2 tiles of 16 x 16), and the pairs of a tile product (AMX: 16).
inline constexpr std::size_t kBf16MaxMR = 32, kBf16MaxNR = 32, kBf16TilePairs = 16;
inline std::size_t bf16_gemm_work_size(std::size_t m, std::size_t n, std::size_t k) {
  const std::size_t kc = (std::min(kKcPairs, (k + 1) / 2) + kBf16TilePairs - 1) / kBf16TilePairs * kBf16TilePairs;
  return (m + kBf16MaxMR + n + kBf16MaxNR) * kc;
}

// The avx512 unit's product instruction: FMAs, vdpbf16ps (level
// avx512_bf16) or AMX's tdpbf16ps (level amx; its own order, above).
enum class Bf16Dot { fma, vdpbf16ps, amx };

namespace kernels {
template <Isa I>
void bf16_gemm(const Bf16Gemm& g, Bf16Dot dot);
// out[i] = bf16(alpha * x[i] + beta * acc[i]) (x null: bf16(beta * acc[i])),
// two products and a sum, not fused, rounded to nearest even (NaN kept):
// the epilogues of the Newton-Schulz products, the same bits on every ISA.
template <Isa I>
void bf16_axpby(std::uint16_t* out, const float* acc, const std::uint16_t* x, std::size_t n, float alpha,
                float beta);
}  // namespace kernels

// The active ISA's product (throws std::invalid_argument if lower and m != n).
void bf16_gemm(const Bf16Gemm& g);

// Muon's Newton-Schulz iteration in bfloat16, in place on `count` float32
// row-major matrices x[t] (rows[t] x cols[t]), whose values are already
// bfloat16 (the normalized input). As torch.optim.Muon: a tall matrix runs on
// its transpose; each of `steps` iterations, with S the bfloat16 matrix,
//     A = bf16(S S^T)                        (lower triangle computed)
//     B = bf16(b * A + c * (A A))            (A A = A A^T: lower triangle,
//                                             A read from its lower triangle)
//     S = bf16(a * S + B S)                  (B read from its lower triangle)
// every bf16() a round to nearest even of the float32 sum (torch's bfloat16
// matmul / addmm: float32 accumulation, one rounding), the epilogue
// products and sum as written (no contraction). Matrices are spread over
// slimgrad's threads (one task each, largest first) when there are at
// least as many as threads, else each product uses the threads: the bits
// are the same either way.
void muon_ns_bf16(float* const* x, const std::size_t* rows, const std::size_t* cols, std::size_t count, float a,
                  float b, float c, int steps);

}  // namespace slimgrad
