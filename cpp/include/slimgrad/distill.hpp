// Knowledge-distillation losses: the fused KD loss (temperature-scaled KL to
// the teacher plus cross-entropy to the labels) and the MSE feature hint.
//
// kd_loss, per row r of a (batch, classes) matrix, with z = s / T:
//   loss_r = alpha * T^2 * KL(softmax(t / T) || softmax(s / T))
//          + (1 - alpha) * CE(softmax(s), label_r)
//   grad_r = alpha * T * (softmax(s / T) - softmax(t / T))
//          + (1 - alpha) * (softmax(s) - onehot(label_r))
// each term multiplied by its reduction factor (see KdOptions).
//
// Two layers, as in core.hpp:
//  - kernels::kd_row_stats / kd_row_grad work on one row and are the only
//    code compiled per ISA: a streaming pass computing the maxima and the
//    log-sum-exp sums (online: running maxima, sums rescaled when a maximum
//    grows), then a pass writing the gradient. Nothing of size V is allocated.
//  - slimgrad::kd_loss runs the rows in parallel (rows are independent, so
//    any thread count gives identical bits), adds the top-k teacher and the
//    label terms, and sums the per-row losses in row order.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

// Which streams a row pass computes.
//  z: softmax(s / T) statistics (needed by the KL term);
//  t: a dense teacher row, softmax(t / T) and the KL cross term;
//  u: softmax(s) at T = 1 for the cross-entropy, when it cannot share z
//     (T != 1, or no KL term).
struct KdRowMode {
  bool z = false;
  bool t = false;
  bool u = false;
};

// Results of the statistics pass over one row (sums in double).
// a_s = T(s_max) * inv_t and a_t = T(t_max) * inv_t, computed in the row's
// dtype, are the reference points of the exponentials:
//   z_sum = sum_i exp(s_i * inv_t - a_s)
//   t_sum = sum_i exp(t_i * inv_t - a_t)
//   w     = sum_i exp(t_i * inv_t - a_t) * ((t_i * inv_t - a_t) - (s_i * inv_t - a_s))
//   u_sum = sum_i exp(s_i - s_max)
// so KL = w / t_sum - log(t_sum) + log(z_sum) and
//    CE = s_max - s_label + log(u_sum).
struct KdRowStats {
  double s_max = 0, t_max = 0;
  double z_sum = 0, t_sum = 0, w = 0, u_sum = 0;
};

// What the gradient pass needs: reference points (a_*), log-sums (l_*) and
// coefficients. grad_i = c_z * exp((s_i*inv_t - a_s) - l_s)
//                      - c_t * exp((t_i*inv_t - a_t) - l_t)
//                      + c_u * exp((s_i - m_u) - l_u)
template <class T>
struct KdGradTerms {
  T inv_t, a_s, l_s, a_t, l_t, m_u, l_u, c_z, c_t, c_u;
};

namespace kernels {
// Statistics pass over one row of n >= 1 logits; t may be null unless mode.t.
template <Isa I, class T>
void kd_row_stats(const T* s, const T* t, std::size_t n, T inv_t, KdRowMode mode, KdRowStats* out);
// Gradient pass; g may alias s or t (each element is read before it is written).
template <Isa I, class T>
void kd_row_grad(const T* s, const T* t, T* g, std::size_t n, const KdGradTerms<T>& c, KdRowMode mode);
// g[i] = scale * (s[i] - t[i]); returns sum (s[i] - t[i])^2 (accumulated in T
// lanes for the SIMD kernels, in double for the reference).
template <Isa I, class T>
double mse_grad(const T* s, const T* t, T* g, std::size_t n, T scale);
// y[i] = exp(x[i]): the vector exponential the SIMD kernels use (std::exp for
// the scalar level). Exposed so tests can measure its error.
template <Isa I, class T>
void exp(const T* x, T* y, std::size_t n);
}  // namespace kernels

// Reduction factors applied to the summed per-row terms and to the gradient.
struct KdOptions {
  double temperature = 2.0;
  double alpha = 0.5;
  double kl_scale = 1.0;  // batchmean: 1/B, mean: 1/(B*V) (torch kl_div "mean"), sum: 1
  double ce_scale = 1.0;  // batchmean and mean: 1/B, sum: 1
};

// Dense teacher: teacher is (B, V); top-k teacher: teacher_values and
// teacher_indices are (B, k), indices distinct and in [0, V) (checked by the
// caller), softmax renormalised over the k given logits. labels (B,) in
// [0, V) or null when alpha == 1. grad (B, V) is written (may alias student).
// Returns the reduced loss. B == 0 gives kl_scale/ce_scale times 0.
template <class T>
double kd_loss(const T* student, const T* teacher, const std::int64_t* teacher_indices,
               std::size_t k, const std::int64_t* labels, T* grad, std::size_t batch,
               std::size_t classes, const KdOptions& options);

// Mean squared error over n elements and its gradient 2 (s - t) / n.
// Chunks of kMseBlock are reduced independently and added in order.
inline constexpr std::size_t kMseBlock = 8192;
template <class T>
double mse_loss(const T* student, const T* teacher, T* grad, std::size_t n);

template <class T>
void vector_exp(const T* x, T* y, std::size_t n);

}  // namespace slimgrad
