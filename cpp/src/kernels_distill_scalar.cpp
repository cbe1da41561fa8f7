// Scalar reference (the oracle) of the distillation kernels: plain loops,
// std::exp, sums in double, compiled with -ffp-contract=off.
//
// The statistics pass here is deliberately the obvious two-pass form (the
// maxima first, then the sums against them) rather than the online rescaling
// of the SIMD kernels, so the two agree only if both are right. Exponent
// arguments are formed in the row's dtype exactly as in the SIMD kernels
// ((x * inv_t) - a), so the differences come from exp and summation only.
//
// Non-finite logits: a teacher logit of -inf (a masked class) has p_t = 0 and
// contributes 0 to the KL term; NaN or +inf make the row's terms NaN; a row
// whose logits are all -inf has no softmax (NaN), as in torch.
#include <cmath>
#include <limits>

#include "slimgrad/distill.hpp"

namespace slimgrad::kernels {
namespace {

template <class T>
void row_stats(const T* s, const T* t, std::size_t n, T inv_t, KdRowMode mode, KdRowStats* out) {
  T s_max = -std::numeric_limits<T>::infinity(), t_max = s_max;
  for (std::size_t i = 0; i < n; ++i) {
    if (s[i] > s_max) s_max = s[i];
    if (mode.t && t[i] > t_max) t_max = t[i];
  }
  const T a_s = s_max * inv_t, a_t = t_max * inv_t;
  double z_sum = 0, t_sum = 0, w = 0, u_sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const T dz = s[i] * inv_t - a_s;
    if (mode.z) z_sum += std::exp(dz);
    if (mode.t) {
      const T dt = t[i] * inv_t - a_t;
      const T et = std::exp(dt);
      t_sum += et;
      // A class the teacher gives probability 0 (a -inf logit: masked)
      // contributes 0 (0 log 0 = 0), even where dt - dz is infinite or NaN.
      // NaN et is kept so a NaN teacher logit still poisons the row.
      if (!(et <= 0)) w += static_cast<double>(et) * static_cast<double>(dt - dz);
    }
    if (mode.u) u_sum += std::exp(s[i] - s_max);
  }
  *out = KdRowStats{s_max, mode.t ? static_cast<double>(t_max) : 0.0, z_sum, t_sum, w, u_sum};
}

template <class T>
void row_grad(const T* s, const T* t, T* g, std::size_t n, const KdGradTerms<T>& c, KdRowMode mode) {
  for (std::size_t i = 0; i < n; ++i) {
    const T si = s[i];
    T gi = 0;
    if (mode.z) gi = c.c_z * std::exp((si * c.inv_t - c.a_s) - c.l_s);
    if (mode.t) gi = gi - c.c_t * std::exp((t[i] * c.inv_t - c.a_t) - c.l_t);
    if (mode.u) gi = gi + c.c_u * std::exp((si - c.m_u) - c.l_u);
    g[i] = gi;
  }
}

template <class T>
double mse(const T* s, const T* t, T* g, std::size_t n, T scale) {
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const T d = s[i] - t[i];
    sum += static_cast<double>(d) * d;
    g[i] = scale * d;
  }
  return sum;
}

}  // namespace

template <>
void kd_row_stats<Isa::scalar, float>(const float* s, const float* t, std::size_t n, float inv_t,
                                      KdRowMode mode, KdRowStats* out) {
  row_stats(s, t, n, inv_t, mode, out);
}
template <>
void kd_row_stats<Isa::scalar, double>(const double* s, const double* t, std::size_t n, double inv_t,
                                       KdRowMode mode, KdRowStats* out) {
  row_stats(s, t, n, inv_t, mode, out);
}
template <>
void kd_row_grad<Isa::scalar, float>(const float* s, const float* t, float* g, std::size_t n,
                                     const KdGradTerms<float>& c, KdRowMode mode) {
  row_grad(s, t, g, n, c, mode);
}
template <>
void kd_row_grad<Isa::scalar, double>(const double* s, const double* t, double* g, std::size_t n,
                                      const KdGradTerms<double>& c, KdRowMode mode) {
  row_grad(s, t, g, n, c, mode);
}
template <>
double mse_grad<Isa::scalar, float>(const float* s, const float* t, float* g, std::size_t n, float scale) {
  return mse(s, t, g, n, scale);
}
template <>
double mse_grad<Isa::scalar, double>(const double* s, const double* t, double* g, std::size_t n,
                                     double scale) {
  return mse(s, t, g, n, scale);
}
template <>
void exp<Isa::scalar, float>(const float* x, float* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}
template <>
void exp<Isa::scalar, double>(const double* x, double* y, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] = std::exp(x[i]);
}

}  // namespace slimgrad::kernels
