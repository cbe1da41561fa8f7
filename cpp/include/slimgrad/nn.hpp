// Kernels of the NumPy training blocks (slimgrad.nn): Dropout, BatchNorm1d
// forward/backward and GELU.
//
// Two layers, as in core.hpp:
//  - slimgrad::kernels::*<Isa, T>: single-threaded kernels on one range (one
//    explicit instantiation per ISA file);
//  - slimgrad::*: the entry points: fixed chunks on the thread pool, ISA
//    dispatch, argument checks (std::invalid_argument).
//
// Dropout: keep(i) = philox::bits(seed, stream, i) >= threshold, with
// threshold = ceil(p * 2^32), so P(keep) = 1 - p up to 2^-32; kept elements
// are multiplied by scale = 1 / (1 - p) rounded to T, dropped ones are 0.
// The mask depends only on (seed, stream, flat index): any thread count and
// any ISA give the same mask, and backward recomputes it (the same call on
// the output gradient).
//
// BatchNorm: the input is viewed as (n, c, l) (l = 1 for a 2-D (n, c) input).
// Per-channel sums run in double (also for float32 input, as torch's CPU
// kernel does), over fixed blocks of rows whose partials are added in block
// order: the statistics are identical for any thread count. Variance: per
// block of rows, one pass of sums shifted by a value of the block (mean and
// sum of squared deviations follow exactly), blocks merged in order with
// Chan et al.'s update.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

namespace kernels {
// out[i] = keep(first + i) ? x[i] * scale : 0   (out may alias x)
template <Isa I, class T>
void dropout(const T* x, T* out, std::size_t n, std::uint64_t first, std::uint64_t seed,
             std::uint64_t stream, std::uint32_t threshold, T scale);

// The BatchNorm kernels work on `rows` rows of a (rows, c, l) C-contiguous
// block and accumulate into per-channel double arrays the caller zeroed.
// With d = x - shift[ch] in double: s1[ch] += sum d;  s2[ch] += sum d^2
template <Isa I, class T>
void bn_shifted_sums(const T* x, std::size_t rows, std::size_t c, std::size_t l, const double* shift, double* s1,
                     double* s2);
// sum_dy[ch] += sum dy;  sum_dy_xmu[ch] += sum dy * (x - mean[ch])
template <Isa I, class T>
void bn_dot(const T* x, const T* dy, std::size_t rows, std::size_t c, std::size_t l, const double* mean,
            double* sum_dy, double* sum_dy_xmu);
// y = (x - mean[ch]) * scale[ch] + shift[ch]   (y may alias x)
template <Isa I, class T>
void bn_normalize(const T* x, T* y, std::size_t rows, std::size_t c, std::size_t l, const T* mean,
                  const T* scale, const T* shift);
// dx = (dy - mean_dy[ch] - (x - mean[ch]) * k[ch]) * scale[ch]   (dx may alias dy)
template <Isa I, class T>
void bn_input_grad(const T* x, const T* dy, T* dx, std::size_t rows, std::size_t c, std::size_t l,
                   const T* mean, const T* k, const T* mean_dy, const T* scale);

// GELU reference: plain loops with libm's erf/tanh/exp (kernels_nn_scalar.cpp),
// used for the scalar ISA and for float64 on every ISA.
template <class T>
void gelu_forward(const T* x, T* y, std::size_t n, bool tanh_approx);
template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, std::size_t n, bool tanh_approx);
// float32 GELU in SIMD (avx2, avx512): a vector exp, and for the exact form
// Abramowitz-Stegun 7.1.26 for erfc (|error| <= 1.5e-7 on Phi, so
// |y - x Phi(x)| <= 1.5e-7 |x| plus rounding); the tanh form as
// x * sigmoid(2u), which equals 0.5 x (1 + tanh u) without its cancellation.
template <Isa I>
void gelu_forward_f32(const float* x, float* y, std::size_t n, bool tanh_approx);
template <Isa I>
void gelu_backward_f32(const float* x, const float* dy, float* dx, std::size_t n, bool tanh_approx);
}  // namespace kernels

// ------------------------------------------------------------- Dropout
// Throws std::invalid_argument unless 0 <= p <= 1. p == 0 copies x; p == 1
// (or p so close to 1 that the threshold reaches 2^32) writes zeros.
std::uint32_t dropout_threshold(double p);
template <class T>
void dropout(const T* x, T* out, std::size_t n, double p, std::uint64_t seed, std::uint64_t stream);

// ----------------------------------------------------------- BatchNorm
struct BnShape {
  std::size_t n, c, l;  // batch, channels, length (1 for 2-D input)
};

// Training forward with batch statistics. weight/bias may be null (affine
// off); running_mean/running_var may be null (no running stats), otherwise
// updated as r = (1 - momentum) * r + momentum * stat with the unbiased
// variance (needs n * l > 1). save_mean/save_invstd (c doubles) receive the
// batch mean and 1 / sqrt(biased var + eps) for backward. An empty batch
// (n * l == 0) leaves the running stats unchanged.
template <class T>
void batch_norm_forward_train(const T* x, T* y, BnShape s, const T* weight, const T* bias, double eps,
                              T* running_mean, T* running_var, double momentum, double* save_mean,
                              double* save_invstd);
// Eval forward with the running statistics; fills save_mean/save_invstd with
// them (mean, 1 / sqrt(var + eps)) for backward.
template <class T>
void batch_norm_forward_eval(const T* x, T* y, BnShape s, const T* weight, const T* bias, double eps,
                             const T* running_mean, const T* running_var, double* save_mean,
                             double* save_invstd);
// Backward. training: the statistics depended on the batch (they came from
// batch_norm_forward_train); otherwise they were constants. grad_weight and
// grad_bias (nullable) are overwritten, not accumulated. dx may alias dy.
template <class T>
void batch_norm_backward(const T* x, const T* dy, T* dx, BnShape s, const T* weight,
                         const double* save_mean, const double* save_invstd, bool training,
                         T* grad_weight, T* grad_bias);

// ---------------------------------------------------------------- GELU
template <class T>
void gelu_forward(const T* x, T* y, std::size_t n, bool tanh_approx);
template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, std::size_t n, bool tanh_approx);

}  // namespace slimgrad
