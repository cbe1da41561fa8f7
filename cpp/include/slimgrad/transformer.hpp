// Kernels of the transformer blocks (slimgrad.nn LayerNorm, attention) and of
// calibration (the input Hessian X^T X of a Linear layer and its per-channel
// activation statistics). float32 data; reductions that need it in double.
//
// Two layers, as in core.hpp / nn.hpp:
//  - slimgrad::kernels::*<Isa>: single-threaded kernels on a range of rows
//    (one explicit instantiation per ISA file; the scalar file is the plain
//    reference, kernels_transformer_simd.hpp the SIMD version);
//  - slimgrad::*: the entry points: fixed chunks on the thread pool, ISA
//    dispatch. Chunks depend on the shape only, so results are identical for
//    any thread count.
//
// LayerNorm over the last axis (rows of n values): y = (x - mean) * rstd * w + b
// with the biased variance; mean/rstd are kept per row for backward.
// Masked softmax: p = softmax(scale * s) over each row, keys with keep[j] == 0
// excluded (p = 0 there); a row with no key kept is all zeros.
// Hessian: H (d, d) += X^T X for X (n, d), computed on the upper triangle in
// MR x NR register tiles (float32 FMA within a block of kHessianKc rows, the
// block's partial then added to H in H's type), then mirrored.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

// Rows of X per register-tile pass: each H element gets a float32 partial
// sum over at most this many rows, then is added into H (float or double).
inline constexpr std::size_t kHessianKc = 256;

namespace kernels {
// rows x n, C-contiguous. mean/rstd: one float per row (written).
template <Isa I>
void layer_norm_rows(const float* x, float* y, std::size_t rows, std::size_t n, const float* w, const float* b,
                     float eps, float* mean, float* rstd);
// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w (w may be null).
template <Isa I>
void layer_norm_input_grad(const float* x, const float* dy, float* dx, std::size_t rows, std::size_t n,
                           const float* w, const float* mean, const float* rstd);
// gw[j] += sum over rows of dy * xhat;  gb[j] += sum of dy  (double accumulators, rows in order)
template <Isa I>
void layer_norm_param_grad(const float* x, const float* dy, std::size_t rows, std::size_t n, const float* mean,
                           const float* rstd, double* gw, double* gb);
// p = softmax(scale * s + bias) per row; bias (n floats, 0 or -inf, may be
// null) is shared by the rows. A row whose every term is -inf is all zeros.
template <Isa I>
void softmax_rows(const float* s, float* p, std::size_t rows, std::size_t n, const float* bias, float scale);
// ds = scale * p * (dp - sum(dp * p))   (per row; ds may alias dp)
template <Isa I>
void softmax_backward_rows(const float* p, const float* dp, float* ds, std::size_t rows, std::size_t n, float scale);

// One head's product: out (m x n, row stride ldo) = A (m x k) B (k x n),
// A(i, t) = a[i * ai + t * at] (any strides: scores, P or P^T), B's rows
// contiguous (b[t * ldb + j]). Each out entry is summed over t in order
// (SIMD: one FMA per t; scalar: multiply, then add).
template <Isa I>
void head_product(const float* a, std::size_t ai, std::size_t at, const float* b, std::size_t ldb, std::size_t m,
                  std::size_t k, std::size_t n, float* out, std::size_t ldo);

// Register tile of the Hessian kernel for ISA I (the scalar ISA uses 1 x 1).
template <Isa I>
struct HessianTile;
template <>
struct HessianTile<Isa::scalar> {
  static constexpr std::size_t mr = 1, nr = 1;
};
template <>
struct HessianTile<Isa::avx2> {
  static constexpr std::size_t mr = 6, nr = 16;
};
template <>
struct HessianTile<Isa::avx512> {
  static constexpr std::size_t mr = 12, nr = 32;
};
// One tile: acc (mr x nr) = sum over k < kc of a[k * mr + r] * b[k * nr + c]
// (packed panels), then h[r * ldh + c] += acc for r < rows, c < cols.
template <Isa I, class T>
void hessian_tile(const float* a, const float* b, std::size_t kc, T* h, std::size_t ldh, std::size_t rows,
                  std::size_t cols);
}  // namespace kernels

// ----------------------------------------------------------- LayerNorm
// x, y: rows x n (y may alias x); w, b: n floats or null; mean, rstd: rows floats.
void layer_norm_forward(const float* x, float* y, std::size_t rows, std::size_t n, const float* w, const float* b,
                        float eps, float* mean, float* rstd);
// dx (may alias dy); grad_w, grad_b (n floats or null) are overwritten.
void layer_norm_backward(const float* x, const float* dy, float* dx, std::size_t rows, std::size_t n,
                         const float* w, const float* mean, const float* rstd, float* grad_w, float* grad_b);

// ------------------------------------------------------ Masked softmax
// s, p: (batch, group, n): batch blocks of `group` rows; keep: (batch, n)
// bytes or null. p may alias s.
void masked_softmax_forward(const float* s, float* p, std::size_t batch, std::size_t group, std::size_t n,
                            const std::uint8_t* keep, float scale);
void masked_softmax_backward(const float* p, const float* dp, float* ds, std::size_t rows, std::size_t n,
                             float scale);

// ------------------------------------------------- Attention products
// Per (batch element, head) products of multi-head attention on the
// projections as the Linear layers write them, (batch, seq, heads * d)
// C-contiguous, head h being columns [h d, (h + 1) d): no per-head copies,
// threaded over (batch, head) (NumPy's matmul on the same views made one
// BLAS call per head: 384 for MiniLM at batch 32, 0.58 ms per layer).
// scores (batch, heads, seq, seq) = a_h c_h^T (q k^T, or in backward g v^T).
void attention_scores(const float* a, const float* c, std::size_t batch, std::size_t seq, std::size_t heads,
                      std::size_t d, float* scores);
// out (batch, seq, heads * d), head h's columns = P_h v_h, or P_h^T v_h when
// `transpose` (backward: P^T g, S^T q); p (batch, heads, seq, seq).
void attention_context(const float* p, bool transpose, const float* v, std::size_t batch, std::size_t seq,
                       std::size_t heads, std::size_t d, float* out);

// ---------------------------------------------------------- Calibration
// h (d x d, T = float or double) += x^T x for x (n x d, float32); the upper
// triangle is computed, the lower one mirrored from it. abs_sum, sq_sum
// (d doubles each, nullable) += per-column sums of |x| and x^2.
template <class T>
void hessian_accumulate(const float* x, std::size_t n, std::size_t d, T* h, double* abs_sum, double* sq_sum);
// <H, x^T x> = sum_ij h[i][j] (x^T x)[i][j] = trace(x H x^T) for a symmetric
// h (d x d; only its upper triangle is read), without forming x^T x: the
// same tiles as hessian_accumulate, each dotted with H's tile. The same
// result for any thread count.
double hessian_inner(const float* x, std::size_t n, std::size_t d, const double* h);

}  // namespace slimgrad
