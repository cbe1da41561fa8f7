// Scalar reference (the oracle) of the nn kernels: plain loops, compiled with
// -ffp-contract=off so every expression rounds as written.
//  - dropout: one Philox block per 4 elements, the definition in philox.hpp.
//  - BatchNorm sums: per channel, in double, rows in order then l in order.
//  - GELU (exact and tanh) for every ISA: erf/tanh/exp from libm.
#include <cmath>

#include "slimgrad/nn.hpp"
#include "slimgrad/philox.hpp"

namespace slimgrad::kernels {
namespace {

template <class T>
void dropout_ref(const T* x, T* out, std::size_t n, std::uint64_t first, std::uint64_t seed, std::uint64_t stream,
                 std::uint32_t threshold, T scale) {
  std::size_t i = 0;
  while (i < n) {
    const std::uint64_t g = first + i;
    const philox::Block blk = philox::block_bits(seed, stream, g >> 2);
    for (std::uint64_t w = g & 3; w < 4 && i < n; ++w, ++i)
      out[i] = blk.v[w] >= threshold ? x[i] * scale : T(0);
  }
}

template <class T>
void shifted_sums_ref(const T* x, std::size_t rows, std::size_t c, std::size_t l, const double* shift, double* s1,
                      double* s2) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < c; ++ch) {
      const T* p = x + (r * c + ch) * l;
      for (std::size_t j = 0; j < l; ++j) {
        const double d = static_cast<double>(p[j]) - shift[ch];
        s1[ch] += d;
        s2[ch] += d * d;
      }
    }
}

template <class T>
void dot_ref(const T* x, const T* dy, std::size_t rows, std::size_t c, std::size_t l, const double* mean,
             double* sum_dy, double* sum_dy_xmu) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < c; ++ch) {
      const std::size_t o = (r * c + ch) * l;
      for (std::size_t j = 0; j < l; ++j) {
        const double g = static_cast<double>(dy[o + j]);
        sum_dy[ch] += g;
        sum_dy_xmu[ch] += g * (static_cast<double>(x[o + j]) - mean[ch]);
      }
    }
}

template <class T>
void normalize_ref(const T* x, T* y, std::size_t rows, std::size_t c, std::size_t l, const T* mean, const T* scale,
                   const T* shift) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < c; ++ch) {
      const std::size_t o = (r * c + ch) * l;
      for (std::size_t j = 0; j < l; ++j) y[o + j] = (x[o + j] - mean[ch]) * scale[ch] + shift[ch];
    }
}

template <class T>
void input_grad_ref(const T* x, const T* dy, T* dx, std::size_t rows, std::size_t c, std::size_t l, const T* mean,
                    const T* k, const T* mean_dy, const T* scale) {
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < c; ++ch) {
      const std::size_t o = (r * c + ch) * l;
      for (std::size_t j = 0; j < l; ++j)
        dx[o + j] = (dy[o + j] - mean_dy[ch] - (x[o + j] - mean[ch]) * k[ch]) * scale[ch];
    }
}

}  // namespace

#define SLIMGRAD_NN_SCALAR(T)                                                                                   \
  template <>                                                                                                   \
  void dropout<Isa::scalar, T>(const T* x, T* out, std::size_t n, std::uint64_t first, std::uint64_t seed,      \
                               std::uint64_t stream, std::uint32_t threshold, T scale) {                        \
    dropout_ref(x, out, n, first, seed, stream, threshold, scale);                                              \
  }                                                                                                             \
  template <>                                                                                                   \
  void bn_shifted_sums<Isa::scalar, T>(const T* x, std::size_t rows, std::size_t c, std::size_t l,               \
                                       const double* shift, double* s1, double* s2) {                           \
    shifted_sums_ref(x, rows, c, l, shift, s1, s2);                                                             \
  }                                                                                                             \
  template <>                                                                                                   \
  void bn_dot<Isa::scalar, T>(const T* x, const T* dy, std::size_t rows, std::size_t c, std::size_t l,          \
                              const double* mean, double* sum_dy, double* sum_dy_xmu) {                         \
    dot_ref(x, dy, rows, c, l, mean, sum_dy, sum_dy_xmu);                                                       \
  }                                                                                                             \
  template <>                                                                                                   \
  void bn_normalize<Isa::scalar, T>(const T* x, T* y, std::size_t rows, std::size_t c, std::size_t l,           \
                                    const T* mean, const T* scale, const T* shift) {                            \
    normalize_ref(x, y, rows, c, l, mean, scale, shift);                                                        \
  }                                                                                                             \
  template <>                                                                                                   \
  void bn_input_grad<Isa::scalar, T>(const T* x, const T* dy, T* dx, std::size_t rows, std::size_t c,           \
                                     std::size_t l, const T* mean, const T* k, const T* mean_dy,                \
                                     const T* scale) {                                                          \
    input_grad_ref(x, dy, dx, rows, c, l, mean, k, mean_dy, scale);                                             \
  }

SLIMGRAD_NN_SCALAR(float)
SLIMGRAD_NN_SCALAR(double)
#undef SLIMGRAD_NN_SCALAR

// ---------------------------------------------------------------- GELU
// exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)),  d/dx = Phi(x) + x phi(x)
// tanh:  0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
// Computed in T, like torch's CPU kernel.
template <class T>
void gelu_forward(const T* x, T* y, std::size_t n, bool tanh_approx) {
  const T half = T(0.5), one = T(1);
  if (tanh_approx) {
    const T beta = T(0.7978845608028654), kappa = T(0.044715);
    for (std::size_t i = 0; i < n; ++i) {
      const T v = x[i];
      y[i] = half * v * (one + std::tanh(beta * (v + kappa * v * v * v)));
    }
  } else {
    const T inv_sqrt2 = T(0.7071067811865476);
    for (std::size_t i = 0; i < n; ++i) {
      const T v = x[i];
      y[i] = half * v * (one + std::erf(v * inv_sqrt2));
    }
  }
}

template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, std::size_t n, bool tanh_approx) {
  const T half = T(0.5), one = T(1);
  if (tanh_approx) {
    const T beta = T(0.7978845608028654), kappa = T(0.044715);
    for (std::size_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T t = std::tanh(beta * (v + kappa * v * v * v));
      const T du = beta * (one + T(3) * kappa * v * v);
      dx[i] = dy[i] * (half * (one + t) + half * v * (one - t * t) * du);
    }
  } else {
    const T inv_sqrt2 = T(0.7071067811865476), inv_sqrt_2pi = T(0.3989422804014327);
    for (std::size_t i = 0; i < n; ++i) {
      const T v = x[i];
      const T cdf = half * (one + std::erf(v * inv_sqrt2));
      const T pdf = inv_sqrt_2pi * std::exp(-half * v * v);
      dx[i] = dy[i] * (cdf + v * pdf);
    }
  }
}

template void gelu_forward<float>(const float*, float*, std::size_t, bool);
template void gelu_forward<double>(const double*, double*, std::size_t, bool);
template void gelu_backward<float>(const float*, const float*, float*, std::size_t, bool);
template void gelu_backward<double>(const double*, const double*, double*, std::size_t, bool);

}  // namespace slimgrad::kernels
