// Scalar reference (the oracle) of the extra optimizer kernels: plain loops,
// compiled with -ffp-contract=off, so every a*b+c is a multiply then an add
// and the result is exactly what the formulas in optim_extra.hpp say. The
// SIMD versions may fuse multiply-adds (one rounding less); tests bound the
// difference. The 8-bit codec avoids every contractible pattern, so its
// codes are bit-identical on all ISAs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "slimgrad/optim_extra.hpp"

namespace slimgrad::kernels {
namespace {

template <class T>
T lamb_r(T p, T m, T v, const LambCoef<T>& c) {
  return (m * c.inv_bc1) / (std::sqrt(v * c.inv_bc2) + c.eps) + c.weight_decay * p;
}

template <class T>
void lamb_moments_ref(const T* p, const T* g, T* m, T* v, std::size_t n, const LambCoef<T>& c, double* sums) {
  double pp = 0.0, rr = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    m[i] = c.beta1 * m[i] + c.one_minus_beta1 * g[i];
    v[i] = c.beta2 * v[i] + c.one_minus_beta2 * g[i] * g[i];
    const T r = lamb_r(p[i], m[i], v[i], c);
    pp += static_cast<double>(p[i]) * p[i];
    rr += static_cast<double>(r) * r;
  }
  sums[0] += pp;
  sums[1] += rr;
}

template <class T>
void lamb_apply_ref(T* p, const T* m, const T* v, std::size_t n, const LambCoef<T>& c, T lr_ratio) {
  for (std::size_t i = 0; i < n; ++i) p[i] = p[i] - lr_ratio * lamb_r(p[i], m[i], v[i], c);
}

// ---- 8-bit moment codec (see Adam8Coef) ----
constexpr float kSignedMax = 127.0f, kUnsignedMax = 255.0f;

// NaN if the block holds a NaN or an infinity (so that, with
// nonfinite="ignore", a non-finite moment decodes as NaN from then on, like
// torch's NaN flowing through the state).
float block_absmax(const float* x, std::size_t n) {
  float a = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return NAN;
    a = std::max(a, std::fabs(x[i]));
  }
  return a;
}

// Blocks whose absmax is below the smallest normal float (1/a would
// overflow) are stored as zeros: such moments are far below any eps. A
// non-finite block (scale NaN) is stored as zeros too.
constexpr float kMinScale = 1.17549435e-38f;

// C = int8: the signed code of m, rint(127*sqrt(|x|/a))*sign(x); C = uint8:
// the unsigned code of sqrt(v), rint(255*sqrt(x/a)) (x >= 0).
template <class C>
constexpr float kCodeMax = std::is_signed_v<C> ? kSignedMax : kUnsignedMax;

template <class C>
void encode(const float* x, C* c, float* scale, std::size_t n) {
  const float a = block_absmax(x, n);
  *scale = a;
  if (!(a >= kMinScale)) {
    std::fill(c, c + n, C(0));
    return;
  }
  const float inv = 1.0f / a;
  for (std::size_t i = 0; i < n; ++i) {
    const float z = std::sqrt(std::fabs(x[i]) * inv) * kCodeMax<C>;
    const auto k = static_cast<C>(static_cast<int>(std::nearbyint(z)));
    c[i] = std::is_signed_v<C> && x[i] < 0.0f ? static_cast<C>(-k) : k;
  }
}
// a*(c/127)*|c/127|, or a*(c/255)^2 for the unsigned code (t >= 0: the same
// expression, the same bits).
template <class C>
float decode(C c, float scale) {
  const float t = static_cast<float>(c) * (1.0f / kCodeMax<C>);
  return (t * std::fabs(t)) * scale;
}

// The second moment is stored through sqrt(v) (what the update divides by,
// computed by the update anyway), which halves v's dynamic range in the log
// domain before the square-law code.
template <class T>
void adamw8bit_ref(T* p, const T* g, std::int8_t* m, std::uint8_t* v, float* ms, float* vs, std::size_t n,
                   const Adam8Coef<T>& c) {
  float mb[kQuantBlock], vb[kQuantBlock];
  for (std::size_t b = 0; b < n; b += kQuantBlock) {
    const std::size_t k = std::min(kQuantBlock, n - b);
    const std::size_t blk = b / kQuantBlock;
    for (std::size_t i = 0; i < k; ++i) {
      const T gi = c.maximize ? -g[b + i] : g[b + i];
      const T sv = static_cast<T>(decode(v[b + i], vs[blk]));
      const T mi = c.beta1 * static_cast<T>(decode(m[b + i], ms[blk])) + c.one_minus_beta1 * gi;
      const T vi = c.beta2 * (sv * sv) + c.one_minus_beta2 * gi * gi;
      const T svi = std::sqrt(vi);
      const T denom = svi * c.inv_sqrt_bc2 + c.eps;
      p[b + i] = p[b + i] * c.decay - c.step_size * (mi / denom);
      mb[i] = static_cast<float>(mi);
      vb[i] = static_cast<float>(svi);
    }
    encode(mb, m + b, ms + blk, k);
    encode(vb, v + b, vs + blk, k);
  }
}

template <class T>
double sum_abs_ref(const T* x, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += std::fabs(static_cast<double>(x[i]));
  return s;
}
template <class T>
double max_abs_ref(const T* x, std::size_t n) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) {
    const double a = std::fabs(static_cast<double>(x[i]));
    if (!(a <= s)) s = a;  // NaN propagates: torch's inf norm of NaN is NaN
  }
  return s;
}
template <class T>
double sum_abs_pow_ref(const T* x, std::size_t n, double q) {
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += std::pow(std::fabs(static_cast<double>(x[i])), q);
  return s;
}

// ---- Adafactor ----
template <class T>
T factored_u(T g, T row, T col, T rmean, T eps1sq, bool maximize) {
  const T gi = maximize ? -g : g;
  const T est = std::max((row * col) / rmean, eps1sq);
  return (T(1) / std::sqrt(est)) * gi;
}
template <class T>
T torch_lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

}  // namespace

#define SLIMGRAD_SCALAR_EXTRA(T)                                                                              \
  template <>                                                                                                 \
  void lamb_moments<Isa::scalar, T>(const T* p, const T* g, T* m, T* v, std::size_t n, const LambCoef<T>& c, \
                                    double* sums) {                                                           \
    lamb_moments_ref(p, g, m, v, n, c, sums);                                                                 \
  }                                                                                                           \
  template <>                                                                                                 \
  void lamb_apply<Isa::scalar, T>(T * p, const T* m, const T* v, std::size_t n, const LambCoef<T>& c,         \
                                  T lr_ratio) {                                                               \
    lamb_apply_ref(p, m, v, n, c, lr_ratio);                                                                  \
  }                                                                                                           \
  template <>                                                                                                 \
  void adamw8bit<Isa::scalar, T>(T * p, const T* g, std::int8_t* m, std::uint8_t* v, float* ms, float* vs,    \
                                 std::size_t n, const Adam8Coef<T>& c) {                                      \
    adamw8bit_ref(p, g, m, v, ms, vs, n, c);                                                                  \
  }                                                                                                           \
  template <>                                                                                                 \
  double sum_abs<Isa::scalar, T>(const T* x, std::size_t n) {                                                 \
    return sum_abs_ref(x, n);                                                                                 \
  }                                                                                                           \
  template <>                                                                                                 \
  double max_abs<Isa::scalar, T>(const T* x, std::size_t n) {                                                 \
    return max_abs_ref(x, n);                                                                                 \
  }                                                                                                           \
  template <>                                                                                                 \
  double sum_abs_pow<Isa::scalar, T>(const T* x, std::size_t n, double q) {                                   \
    return sum_abs_pow_ref(x, n, q);                                                                          \
  }                                                                                                           \
  template <>                                                                                                 \
  void scale<Isa::scalar, T>(T * x, std::size_t n, T s) {                                                     \
    for (std::size_t i = 0; i < n; ++i) x[i] *= s;                                                            \
  }                                                                                                           \
  template <>                                                                                                 \
  void clamp_abs<Isa::scalar, T>(T * x, std::size_t n, T c) {                                                 \
    for (std::size_t i = 0; i < n; ++i) {                                                                     \
      const T lo = x[i] < -c ? -c : x[i];                                                                     \
      x[i] = c < lo ? c : lo;                                                                                 \
    }                                                                                                         \
  }                                                                                                           \
  template <>                                                                                                 \
  void accumulate<Isa::scalar, T>(T * acc, const T* g, std::size_t n, T s) {                                  \
    if (s == T(1))                                                                                            \
      for (std::size_t i = 0; i < n; ++i) acc[i] += g[i];                                                     \
    else                                                                                                      \
      for (std::size_t i = 0; i < n; ++i) acc[i] += s * g[i];                                                 \
  }                                                                                                           \
  template <>                                                                                                 \
  void sq_rows_cols<Isa::scalar, T>(const T* g, std::size_t rows, std::size_t cols, std::size_t ld,          \
                                    double* row_sq, double* col_sq) {                                         \
    for (std::size_t c = 0; c < cols; ++c) col_sq[c] = 0.0;                                                   \
    for (std::size_t r = 0; r < rows; ++r) {                                                                  \
      double s = 0.0;                                                                                         \
      for (std::size_t c = 0; c < cols; ++c) {                                                                \
        const double x = static_cast<double>(g[r * ld + c]);                                                  \
        s += x * x;                                                                                           \
        col_sq[c] += x * x;                                                                                   \
      }                                                                                                       \
      row_sq[r] = s;                                                                                          \
    }                                                                                                         \
  }                                                                                                           \
  template <>                                                                                                 \
  double adafactor_factored_norm<Isa::scalar, T>(const T* g, const T* row, const T* col, std::size_t rows,   \
                                                 std::size_t cols, std::size_t ld, T rmean, T eps1sq,         \
                                                 bool maximize) {                                             \
    double s = 0.0;                                                                                           \
    for (std::size_t r = 0; r < rows; ++r)                                                                    \
      for (std::size_t c = 0; c < cols; ++c) {                                                                \
        const T u = factored_u(g[r * ld + c], row[r], col[c], rmean, eps1sq, maximize);                       \
        s += static_cast<double>(u) * u;                                                                      \
      }                                                                                                       \
    return s;                                                                                                 \
  }                                                                                                           \
  template <>                                                                                                 \
  void adafactor_factored_apply<Isa::scalar, T>(T * p, const T* g, const T* row, const T* col,               \
                                                std::size_t rows, std::size_t cols, std::size_t ld, T rmean,  \
                                                T eps1sq, bool maximize, T decay, T alpha) {                  \
    for (std::size_t r = 0; r < rows; ++r)                                                                    \
      for (std::size_t c = 0; c < cols; ++c) {                                                                \
        const T u = factored_u(g[r * ld + c], row[r], col[c], rmean, eps1sq, maximize);                       \
        p[r * ld + c] = p[r * ld + c] * decay - alpha * u;                                                    \
      }                                                                                                       \
  }                                                                                                           \
  template <>                                                                                                 \
  double adafactor_vector_var<Isa::scalar, T>(const T* g, T* var, std::size_t n, T w, T eps1sq,              \
                                              bool maximize) {                                                \
    double s = 0.0;                                                                                           \
    for (std::size_t i = 0; i < n; ++i) {                                                                     \
      const T gi = maximize ? -g[i] : g[i];                                                                   \
      var[i] = torch_lerp(var[i], gi * gi, w);                                                                \
      const T u = (T(1) / std::sqrt(std::max(var[i], eps1sq))) * gi;                                          \
      s += static_cast<double>(u) * u;                                                                        \
    }                                                                                                         \
    return s;                                                                                                 \
  }                                                                                                           \
  template <>                                                                                                 \
  void adafactor_vector_apply<Isa::scalar, T>(T * p, const T* g, const T* var, std::size_t n, T eps1sq,      \
                                              bool maximize, T decay, T alpha) {                              \
    for (std::size_t i = 0; i < n; ++i) {                                                                     \
      const T gi = maximize ? -g[i] : g[i];                                                                   \
      const T u = (T(1) / std::sqrt(std::max(var[i], eps1sq))) * gi;                                          \
      p[i] = p[i] * decay - alpha * u;                                                                        \
    }                                                                                                         \
  }

SLIMGRAD_SCALAR_EXTRA(float)
SLIMGRAD_SCALAR_EXTRA(double)
#undef SLIMGRAD_SCALAR_EXTRA

template <>
void quantize_signed<Isa::scalar>(const float* x, std::int8_t* codes, float* scales, std::size_t n) {
  for (std::size_t b = 0; b < n; b += kQuantBlock)
    encode(x + b, codes + b, scales + b / kQuantBlock, std::min(kQuantBlock, n - b));
}
template <>
void quantize_unsigned<Isa::scalar>(const float* x, std::uint8_t* codes, float* scales, std::size_t n) {
  for (std::size_t b = 0; b < n; b += kQuantBlock)
    encode(x + b, codes + b, scales + b / kQuantBlock, std::min(kQuantBlock, n - b));
}
template <>
void dequantize_signed<Isa::scalar>(const std::int8_t* codes, const float* scales, float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) x[i] = decode(codes[i], scales[i / kQuantBlock]);
}
template <>
void dequantize_unsigned<Isa::scalar>(const std::uint8_t* codes, const float* scales, float* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) x[i] = decode(codes[i], scales[i / kQuantBlock]);
}

}  // namespace slimgrad::kernels
