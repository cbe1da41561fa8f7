// Transformer kernels, scalar reference (the oracle of the SIMD files): plain
// loops, no intrinsics, compiled with -ffp-contract=off. Row statistics
// (LayerNorm mean/variance, softmax sums, the dot products of backward) are
// accumulated in double and rounded to float once; exp is libm's, in double.
// The Hessian tile is 1 x 1: a float32 dot product over the kc packed rows,
// in row order (the SIMD tiles use FMA, so they differ by rounding only).
#include <cmath>
#include <limits>

#include "slimgrad/transformer.hpp"

namespace slimgrad::kernels {

template <>
void head_product<Isa::scalar>(const float* a, std::size_t ai, std::size_t at, const float* b, std::size_t ldb,
                               std::size_t m, std::size_t k, std::size_t n, float* out, std::size_t ldo) {
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t j = 0; j < n; ++j) {
      float acc = 0.0f;  // float, in t order, like the SIMD lanes (which fuse each step)
      for (std::size_t t = 0; t < k; ++t) acc += a[i * ai + t * at] * b[t * ldb + j];
      out[i * ldo + j] = acc;
    }
}

template <>
void layer_norm_rows<Isa::scalar>(const float* x, float* y, std::size_t rows, std::size_t n, const float* w,
                                  const float* b, float eps, float* mean, float* rstd) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    double s = 0.0;
    for (std::size_t j = 0; j < n; ++j) s += xr[j];
    const double m = n ? s / static_cast<double>(n) : 0.0;
    double q = 0.0;
    for (std::size_t j = 0; j < n; ++j) q += (xr[j] - m) * (xr[j] - m);
    const double var = n ? q / static_cast<double>(n) : 0.0;
    const double rs = 1.0 / std::sqrt(var + static_cast<double>(eps));
    mean[r] = static_cast<float>(m);
    rstd[r] = static_cast<float>(rs);
    for (std::size_t j = 0; j < n; ++j) {
      const double v = (xr[j] - m) * rs;
      yr[j] = static_cast<float>(v * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f));
    }
  }
}

template <>
void layer_norm_input_grad<Isa::scalar>(const float* x, const float* dy, float* dx, std::size_t rows, std::size_t n,
                                        const float* w, const float* mean, const float* rstd) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    const float* gr = dy + r * n;
    float* dr = dx + r * n;
    const double m = mean[r], rs = rstd[r];
    double sg = 0.0, sgx = 0.0;
    for (std::size_t j = 0; j < n; ++j) {
      const double g = static_cast<double>(gr[j]) * (w ? w[j] : 1.0f);
      sg += g;
      sgx += g * (xr[j] - m) * rs;
    }
    const double mg = n ? sg / static_cast<double>(n) : 0.0;
    const double mgx = n ? sgx / static_cast<double>(n) : 0.0;
    for (std::size_t j = 0; j < n; ++j) {
      const double g = static_cast<double>(gr[j]) * (w ? w[j] : 1.0f);
      const double xhat = (xr[j] - m) * rs;
      dr[j] = static_cast<float>(rs * (g - mg - xhat * mgx));
    }
  }
}

template <>
void layer_norm_param_grad<Isa::scalar>(const float* x, const float* dy, std::size_t rows, std::size_t n,
                                        const float* mean, const float* rstd, double* gw, double* gb) {
  for (std::size_t r = 0; r < rows; ++r) {
    const double m = mean[r], rs = rstd[r];
    for (std::size_t j = 0; j < n; ++j) {
      const double g = dy[r * n + j];
      gw[j] += g * ((x[r * n + j] - m) * rs);
      gb[j] += g;
    }
  }
}

template <>
void softmax_rows<Isa::scalar>(const float* s, float* p, std::size_t rows, std::size_t n, const float* bias,
                               float scale) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* sr = s + r * n;
    float* pr = p + r * n;
    const double ninf = -std::numeric_limits<double>::infinity();
    auto term = [&](std::size_t j) { return static_cast<double>(scale * sr[j] + (bias ? bias[j] : 0.0f)); };
    double mx = ninf;
    for (std::size_t j = 0; j < n; ++j) mx = std::fmax(mx, term(j));
    if (mx == ninf) {  // no key kept (or all -inf)
      for (std::size_t j = 0; j < n; ++j) pr[j] = 0.0f;
      continue;
    }
    double sum = 0.0;
    for (std::size_t j = 0; j < n; ++j) {
      const double e = std::exp(term(j) - mx);  // exactly 0 for -inf terms
      pr[j] = static_cast<float>(e);
      sum += e;
    }
    const double inv = 1.0 / sum;
    for (std::size_t j = 0; j < n; ++j) pr[j] = static_cast<float>(pr[j] * inv);
  }
}

template <>
void softmax_backward_rows<Isa::scalar>(const float* p, const float* dp, float* ds, std::size_t rows, std::size_t n,
                                        float scale) {
  for (std::size_t r = 0; r < rows; ++r) {
    const float* pr = p + r * n;
    const float* gr = dp + r * n;
    double dot = 0.0;
    for (std::size_t j = 0; j < n; ++j) dot += static_cast<double>(pr[j]) * gr[j];
    float* dr = ds + r * n;
    for (std::size_t j = 0; j < n; ++j) dr[j] = static_cast<float>(scale * (pr[j] * (gr[j] - dot)));
  }
}

template <class T>
static void hessian_tile_1x1(const float* a, const float* b, std::size_t kc, T* h, std::size_t rows,
                             std::size_t cols) {
  float acc = 0.0f;
  for (std::size_t k = 0; k < kc; ++k) acc += a[k] * b[k];
  if (rows && cols) h[0] += static_cast<T>(acc);
}

template <>
void hessian_tile<Isa::scalar, float>(const float* a, const float* b, std::size_t kc, float* h, std::size_t,
                                      std::size_t rows, std::size_t cols) {
  hessian_tile_1x1(a, b, kc, h, rows, cols);
}
template <>
void hessian_tile<Isa::scalar, double>(const float* a, const float* b, std::size_t kc, double* h, std::size_t,
                                       std::size_t rows, std::size_t cols) {
  hessian_tile_1x1(a, b, kc, h, rows, cols);
}

}  // namespace slimgrad::kernels
