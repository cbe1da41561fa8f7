// Second-order compression of one Linear layer from its input Hessian
// H = X^T X (cols x cols, cols = the layer's input features): GPTQ
// (Frantar et al. 2022) quantizes, SparseGPT (Frantar & Alistarh 2023) prunes,
// both column by column, spreading each column's error onto the columns not
// yet processed through the upper Cholesky factor of H^-1 (the Optimal Brain
// Surgeon update), with lazy batches of `block_size` columns.
//
// Shared conventions:
//  - W is rows x cols float32 (row r = output r), H cols x cols float64; both
//    only read. Work is float64; each row is independent (the same H^-1
//    serves every row), so rows are split into fixed chunks on the thread pool.
//  - Two steps: the Factor (processing order, dead columns, S) from H, then
//    the column loop on W. factor() computes the Factor in float64 with
//    Eigen; callers with a faster BLAS (the Python layer: NumPy's OpenBLAS)
//    may pass their own.
//  - No inverse: with S upper, S S^T = H (damped, processing order) and
//    U = S^-1 (U^T U = H^-1, the paper's factor), GPTQ's result satisfies
//    D = E U (D = W0 - Q, E the scaled errors), so E = D S and column k's
//    current weight is w_k = W0_k + (sum_{j<k} D_j S[j, k]) / S[k, k]
//    (left-looking). The loop keeps that sum (acc) per column; the weights of
//    a range of columns as of its first column (a group's scale, SparseGPT's
//    block mask, N:M scores) are W0 + acc @ inv(S_range) (a small triangular
//    inverse); a group whose columns are not contiguous in processing order
//    (act-order) uses the top rows of U instead (w_a = W0_a - E[:, :p] U[:p, a],
//    p = the group's first position: top_rows()).
//  - Every sum over earlier columns is one fused multiply-add chain in
//    processing order (kernels::gemm_acc), so the result is identical for every
//    ISA, thread count and (GPTQ, SparseGPT N:M) block_size.
//  - Columns with H[j, j] == 0 (an input that was always zero) are "dead":
//    their weights are zeroed and H[j, j] set to 1, as the reference does.
//  - Damping: H + damp * mean(diag H) * I; a Hessian that is still not
//    positive definite throws std::domain_error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "slimgrad/isa.hpp"

namespace slimgrad::kernels {
// c[r + j * ldc] = fma(a[r + k * lda], b[k * ldb + j], c[...]) for k = 0..kc-1
// in that order (one FMA chain per element, starting from c's value), for
// r < rows, j < n: C (col-major) += A (col-major) * B (row-major). Every ISA
// computes the same chain, so results are identical bit for bit.
template <Isa I>
void gemm_acc(double* c, std::size_t ldc, const double* a, std::size_t lda, const double* b, std::size_t ldb,
              std::size_t rows, std::size_t n, std::size_t kc);
}  // namespace slimgrad::kernels

namespace slimgrad::gptq {

// The processing order and the upper S with S S^T = H (damped, in that
// order; S = J L J for L L^T = J H J, J the order reversal). 1 / S[i, i] is
// U[i, i], the OBS denominator of column i. `top` holds the first top_rows
// rows of U = S^-1 (GPTQ only; see top_rows()).
struct FactorRef {
  const std::int64_t* order;  // position -> original column (a permutation of 0..cols-1)
  const std::uint8_t* dead;   // by original column: 1 = H[j, j] was 0 (weights zeroed)
  const double* s;            // cols x cols, row-major, in processing order, upper
  const double* top = nullptr;  // top_rows x cols, row-major: U[:top_rows, :]
  std::size_t top_rows = 0;
};
struct Factor {
  std::vector<std::int64_t> order;
  std::vector<std::uint8_t> dead;
  std::vector<double> s;
  FactorRef ref() const { return {order.data(), dead.data(), s.data()}; }
};

// Dead columns get H[j, j] = 1; the order is by decreasing H[j, j] (stable)
// with act_order, else 0..cols-1; then H + damp * mean(diag H) * I in that
// order and its Cholesky factor S (above). float64, Eigen. Throws
// std::domain_error if the damped H is not positive definite.
Factor factor(const double* h, std::size_t cols, bool act_order, double damp);

// The rows of U that GPTQ needs for a processing order and group size
// (0 = one group): the largest first position p of a group whose columns are
// not contiguous in processing order (act-order), 0 if none.
std::size_t top_rows(const std::int64_t* order, std::size_t cols, std::size_t group_size);

// U[:rows, :] for U = S^-1 (S upper, cols x cols row-major) into top
// (rows x cols, row-major): Eigen's triangular solve S^T X = I[:, :rows],
// rows * cols^2 / 2 multiply-adds (the Python layer does it on NumPy's BLAS).
void inverse_top(const double* s, std::size_t cols, std::size_t rows, double* top);

// out[a, b] = h[order[a], order[b]] (n x n, row-major; order a permutation of
// 0..n-1): H in GPTQ's processing order, in one pass (NumPy's two takes, rows
// then columns, took 12 ms of CPU for n = 1536, a tenth of the layer).
void permute_symmetric(const double* h, std::size_t n, const std::int64_t* order, double* out);

// GPTQ's check of its Hessian (n x n, row-major), in one pass: 1 if any entry
// is NaN or infinite; else 0 if np.allclose(h, h.T, rtol, atol) with
// atol = atol_scale * max|h| (|h[i, j] - h[j, i]| <= atol + rtol * min(|h[i, j]|,
// |h[j, i]|) for every i, j, to rounding), 2 if not. By square blocks: NumPy's
// transposed read of a 1536 x 1536 H took longer than GPTQ's column loop, and
// a separate np.isfinite pass cost as much again.
int check_hessian(const double* h, std::size_t n, double rtol, double atol_scale);

struct QuantOptions {
  int bits = 4;               // 2..8, codes as in quant::Spec
  bool symmetric = true;      // [-(2^(b-1)-1), 2^(b-1)-1], zero point 0; else [0, 2^b-1]
  std::size_t group_size = 0; // columns per scale; 0 = one scale per row (per channel)
  bool act_order = false;     // process columns by decreasing H[j, j]
  double damp = 0.01;
  std::size_t block_size = 128;
};

// GPTQ. A group's scale and zero point are taken (min/max, quant::make_param,
// exactly as quant::quantize) from the group's *current* weights, i.e. with
// the error of every column processed before it, when its first column is
// reached; with act_order the groups stay contiguous ranges of original
// columns (the storage format), only the processing order changes.
// Writes codes (rows x cols, one byte each: int8 bits when symmetric, else
// uint8), scale and zero_point (rows x n_groups). Returns the summed OBS
// loss sum((w - q)^2 / d^2) / 2 over all columns.
double quantize(const float* w, std::size_t rows, std::size_t cols, const double* h, const QuantOptions& opt,
                std::uint8_t* codes, float* scale, std::int32_t* zero_point);
// The same with a given factor (opt.act_order and opt.damp are the factor's
// business; f.top_rows >= top_rows(f.order, cols, opt.group_size), else
// std::invalid_argument).
double quantize(const float* w, std::size_t rows, std::size_t cols, const FactorRef& f, const QuantOptions& opt,
                std::uint8_t* codes, float* scale, std::int32_t* zero_point);

struct PruneOptions {
  double sparsity = 0.5;      // unstructured (when n == 0): fraction pruned
  std::size_t n = 0, m = 0;   // n:m (m > 0): in every m consecutive columns of a row, n are kept
  double damp = 0.01;
  std::size_t block_size = 128;
};

// SparseGPT. Unstructured: within each block of block_size columns, each row
// prunes round(sparsity * block) weights with the smallest w^2 / Hinv[j, j]^2
// (the paper ranks a block over all rows at once; ranking per row keeps every
// output at the same sparsity, which Wanda found to work better, and keeps
// rows independent), from the block's weights as of its first column. N:M:
// in each group of m columns, the smallest scores of each row are pruned
// (m - n of them), from the weights as updated so far. Ties prune the lower
// column first. Writes the updated weights (pruned ones exactly 0) to out
// (rows x cols float32) and the mask (1 = kept) to keep. Returns the OBS loss.
double prune(const float* w, std::size_t rows, std::size_t cols, const double* h, const PruneOptions& opt,
             float* out, std::uint8_t* keep);
// The same with a given factor (in the natural column order; opt.damp is the factor's business).
double prune(const float* w, std::size_t rows, std::size_t cols, const FactorRef& f, const PruneOptions& opt,
             float* out, std::uint8_t* keep);

}  // namespace slimgrad::gptq
