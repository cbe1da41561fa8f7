// Scalar reference (the oracle) of the core kernels: plain loops, compiled
// with -ffp-contract=off so `y + alpha * x` is a multiply then an add.
#include <cmath>

#include "slimgrad/core.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {

template <>
void axpy<Isa::scalar, float>(float* y, const float* x, float alpha, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}
template <>
void axpy<Isa::scalar, double>(double* y, const double* x, double alpha, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <>
double sum_squares<Isa::scalar, float>(const float* x, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}
template <>
double sum_squares<Isa::scalar, double>(const double* x, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += x[i] * x[i];
  return s;
}

template <>
std::size_t find_nonfinite<Isa::scalar, float>(const float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return n;
}
template <>
std::size_t find_nonfinite<Isa::scalar, double>(const double* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return i;
  return n;
}

template <>
void widen_half<Isa::scalar>(const std::uint16_t* x, float* y, std::size_t n, bool bf16) {
  for (std::size_t i = 0; i < n; ++i) y[i] = bf16 ? simd::bf16_to_float(x[i]) : simd::half_to_float(x[i]);
}

template <>
void narrow_half<Isa::scalar>(const float* x, std::uint16_t* y, std::size_t n, bool bf16) {
  for (std::size_t i = 0; i < n; ++i) y[i] = bf16 ? simd::float_to_bf16(x[i]) : simd::float_to_half(x[i]);
}

template <>
void stream_probe<Isa::scalar>(float* p, const float* g, float* m, float* v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    p[i] += g[i];
    m[i] += g[i];
    v[i] += g[i];
  }
}

}  // namespace slimgrad::kernels
