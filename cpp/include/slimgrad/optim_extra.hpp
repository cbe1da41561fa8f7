// Multipass optimizer kernels: LAMB, AdamW8bit, Adafactor (Lion is an
// elementwise row of optim_table.hpp, stepped by optim_step), and the
// gradient utilities clip_grad_norm / clip_grad_value / accumulate.
//
// Same two layers as core.hpp:
//  - slimgrad::kernels::<fn><Isa, T>: single-threaded kernels on one
//    contiguous range (scalar reference in kernels_optim_extra_scalar.cpp,
//    SIMD in kernels_optim_extra_simd.hpp instantiated per ISA unit);
//  - slimgrad::<fn>: multi-tensor entry points in optim_extra.cpp. A list of
//    arrays is cut by the core planner (plan_work, threading.hpp; piece
//    boundaries depend only on the array sizes), run on the thread pool, and
//    every reduction adds per-item partials in item order: results are
//    identical for any thread count.
// T is float or double; all math is done in T except the reductions, whose
// per-item partials are returned as double.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

// AdamW8bit: elements sharing one float32 scale per moment.
inline constexpr std::size_t kQuantBlock = 256;

// LAMB (You et al. 2019) with Adam bias correction:
//   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g^2
//   r = (m/bc1) / (sqrt(v/bc2) + eps) + weight_decay*p
// where bc1 = 1-beta1^t, bc2 = 1-beta2^t (passed as reciprocals).
template <class T>
struct LambCoef {
  T beta1, beta2, one_minus_beta1, one_minus_beta2, inv_bc1, inv_bc2, eps, weight_decay;
};

// AdamW8bit: torch AdamW's update on moments stored as 8-bit codes:
//   p *= decay (= 1 - lr*weight_decay)
//   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g^2
//   p -= step_size * m / (sqrt(v)*inv_sqrt_bc2 + eps),  step_size = lr/bc1
// Codec (square law, per block of kQuantBlock with a float32 absmax a):
//   signed   (int8,  m):       c = rint(127*sqrt(|x|*(1/a))) * sign(x),  x = a*(c/127)*|c/127|
//   unsigned (uint8, sqrt(v)): c = rint(255*sqrt(x*(1/a))),             x = a*(c/255)^2
// i.e. the second moment is stored through s = sqrt(v) (so v = a*(c/255)^4
// with a = the block's max sqrt(v)). rint rounds ties to even. Only
// multiplies and square roots: codes are bit-identical on every ISA. The
// moments are updated in T and re-encoded in the same pass.
template <class T>
struct Adam8Coef {
  T beta1, beta2, one_minus_beta1, one_minus_beta2, step_size, inv_sqrt_bc2, eps, decay;
  bool maximize;
};

namespace kernels {
// Pass 1 of LAMB: updates m and v, adds sum(p^2) to sums[0] and sum(r^2) to
// sums[1] (r from the new moments; p unchanged).
template <Isa I, class T>
void lamb_moments(const T* p, const T* g, T* m, T* v, std::size_t n, const LambCoef<T>& c, double* sums);
// Pass 2: p -= lr_ratio * r, r recomputed from the stored m, v and p (same
// arithmetic as pass 1, so the norm and the update agree exactly).
template <Isa I, class T>
void lamb_apply(T* p, const T* m, const T* v, std::size_t n, const LambCoef<T>& c, T lr_ratio);

// n elements starting on a block boundary; ms/vs hold ceil(n/256) scales.
template <Isa I, class T>
void adamw8bit(T* p, const T* g, std::int8_t* m, std::uint8_t* v, float* ms, float* vs, std::size_t n,
               const Adam8Coef<T>& c);
// Codec alone (for tests and state conversion): n elements, block-aligned.
template <Isa I>
void quantize_signed(const float* x, std::int8_t* codes, float* scales, std::size_t n);
template <Isa I>
void quantize_unsigned(const float* x, std::uint8_t* codes, float* scales, std::size_t n);
template <Isa I>
void dequantize_signed(const std::int8_t* codes, const float* scales, float* x, std::size_t n);
template <Isa I>
void dequantize_unsigned(const std::uint8_t* codes, const float* scales, float* x, std::size_t n);

// Reductions for clip_grad_norm: sum |x|, max |x|, sum |x|^q.
template <Isa I, class T>
double sum_abs(const T* x, std::size_t n);
template <Isa I, class T>
double max_abs(const T* x, std::size_t n);
template <Isa I, class T>
double sum_abs_pow(const T* x, std::size_t n, double q);
// x *= s
template <Isa I, class T>
void scale(T* x, std::size_t n, T s);
// x = min(max(x, -c), c); NaN stays NaN (torch.clamp_).
template <Isa I, class T>
void clamp_abs(T* x, std::size_t n, T c);
// acc += s * g (s == 1: a plain add, no rounding of the product).
template <Isa I, class T>
void accumulate(T* acc, const T* g, std::size_t n, T s);

// Adafactor (torch.optim.Adafactor) pieces on a (rows, cols) sub-matrix of
// a row-major matrix with row stride ld (so the entry point can tile it):
// row_sq[r] = sum_c g^2 and col_sq[c] = sum_r g^2 over the tile (double).
template <Isa I, class T>
void sq_rows_cols(const T* g, std::size_t rows, std::size_t cols, std::size_t ld, double* row_sq,
                  double* col_sq);
// u = g * (1/sqrt(max(row[r]*col[c] / rmean, eps1sq))) in torch's order of
// operations; returns sum(u^2) over the tile, writes nothing.
template <Isa I, class T>
double adafactor_factored_norm(const T* g, const T* row, const T* col, std::size_t rows, std::size_t cols,
                               std::size_t ld, T rmean, T eps1sq, bool maximize);
// p = p*decay - alpha*u over the tile.
template <Isa I, class T>
void adafactor_factored_apply(T* p, const T* g, const T* row, const T* col, std::size_t rows, std::size_t cols,
                              std::size_t ld, T rmean, T eps1sq, bool maximize, T decay, T alpha);
// Vector case: var = lerp(var, g^2, w) (torch's two-sided lerp formula);
// returns sum(u^2) of u = g * (1/sqrt(max(var, eps1sq))).
template <Isa I, class T>
double adafactor_vector_var(const T* g, T* var, std::size_t n, T w, T eps1sq, bool maximize);
template <Isa I, class T>
void adafactor_vector_apply(T* p, const T* g, const T* var, std::size_t n, T eps1sq, bool maximize, T decay,
                            T alpha);
}  // namespace kernels

// ---------------------------------------------------------- entry points
// Multi-tensor: `count` arrays, array i of sizes[i] elements. Every pointer
// has been validated by the caller (bindings) before the call.
// lr per array is lr * trust ratio; ratios (if not null) receives them.
template <class T>
void lamb_step(T* const* p, const T* const* g, T* const* m, T* const* v, const std::size_t* sizes,
               std::size_t count, const LambCoef<T>& c, T lr, double* ratios);
template <class T>
void adamw8bit_step(T* const* p, const T* const* g, std::int8_t* const* m, std::uint8_t* const* v,
                    float* const* ms, float* const* vs, const std::size_t* sizes, std::size_t count,
                    const Adam8Coef<T>& c);
void quantize_moment(const float* x, void* codes, float* scales, std::size_t n, bool is_signed);
void dequantize_moment(const void* codes, const float* scales, float* x, std::size_t n, bool is_signed);

// Total norm of all arrays together (norm_type 1, 2, inf or any q > 0),
// fixed-order.
template <class T>
double total_norm(const T* const* x, const std::size_t* sizes, std::size_t count, double norm_type);
// The same over float16 (bf16 false) or bfloat16 bit patterns: each piece
// widened to float32 (exact), then the float32 reduction, so the result is
// the float32 norm of the widened values.
double total_norm_half(const std::uint16_t* const* x, const std::size_t* sizes, std::size_t count,
                       double norm_type, bool bf16);
template <class T>
void scale_all(T* const* x, const std::size_t* sizes, std::size_t count, T s);
template <class T>
void clamp_all(T* const* x, const std::size_t* sizes, std::size_t count, T c);
template <class T>
void accumulate_all(T* const* acc, const T* const* g, const std::size_t* sizes, std::size_t count, T s);

// One Adafactor step of one array (torch semantics, see optim/adafactor.py).
// Factored when batch*rows*cols describes a >= 2-D array (row_var: batch*rows,
// col_var: batch*cols), else var (n elements). Returns nothing; all scalars
// that depend on the step are passed in.
struct AdafactorArgs {
  double lr, rho, eps1, eps2, d, weight_decay, beta2_weight;
  bool maximize;
};
template <class T>
void adafactor_step(T* p, const T* g, T* row_var, T* col_var, T* var, std::size_t batch, std::size_t rows,
                    std::size_t cols, bool factored, const AdafactorArgs& a);

}  // namespace slimgrad
