// Threaded, dispatched entry points of the nn kernels (see nn.hpp).
#include "slimgrad/nn.hpp"

#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "slimgrad/threading.hpp"

namespace slimgrad {

// ------------------------------------------------------------- Dropout
namespace {
constexpr double kTwo32 = 4294967296.0;
}

std::uint32_t dropout_threshold(double p) {
  if (!(p >= 0.0 && p <= 1.0)) {  // also rejects NaN
    std::ostringstream msg;
    msg << "p: dropout probability has to be between 0 and 1, but got " << p;
    throw std::invalid_argument(msg.str());
  }
  // p * 2^32 is exact (a power-of-two scaling); 2^32 means "drop everything"
  // and does not fit: the caller treats p that high as p == 1.
  const double t = std::ceil(p * kTwo32);
  return t >= kTwo32 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(t);
}

template <class T>
void dropout(const T* x, T* out, std::size_t n, double p, std::uint64_t seed, std::uint64_t stream) {
  const std::uint32_t threshold = dropout_threshold(p);
  if (threshold == 0) {  // p == 0: keep everything, scale 1
    if (out != x)
      parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) { std::memcpy(out + b, x + b, (e - b) * sizeof(T)); });
    return;
  }
  if (std::ceil(p * kTwo32) >= kTwo32) {  // p == 1 (or within 2^-32 of it): zeros
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) out[i] = T(0);
    });
    return;
  }
  const T scale = static_cast<T>(1.0 / (1.0 - p));
  // kGrain is a multiple of every ISA's batch (32 or 64 elements), so
  // each chunk starts on a batch boundary.
  dispatch([&](auto isa) {
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      kernels::dropout<decltype(isa)::value, T>(x + b, out + b, e - b, b, seed, stream, threshold, scale);
    });
  });
}

// ----------------------------------------------------------- BatchNorm
namespace {

// A reduction block holds at least kBnGrain elements (whole rows) and at
// least kBnMinValues values per channel, and there are at most kBnMaxBlocks
// blocks. The partials (at most three doubles per channel per block) thus
// take at most 3 * kBnMaxBlocks * c doubles and at most 3/8 of a float32
// input's bytes. Everything depends on the shape only, never on the thread
// count.
constexpr std::size_t kBnGrain = kGrain / 2;
constexpr std::size_t kBnMinValues = 16;
constexpr std::size_t kBnMaxBlocks = 64;

std::size_t ceil_div(std::size_t a, std::size_t b) { return (a + b - 1) / b; }

std::size_t rows_per_block(const BnShape& s) {
  const std::size_t row = s.c * s.l > 0 ? s.c * s.l : 1;
  std::size_t r = ceil_div(kBnGrain, row);
  const std::size_t by_values = ceil_div(kBnMinValues, s.l > 0 ? s.l : 1);
  const std::size_t by_blocks = ceil_div(s.n, kBnMaxBlocks);
  if (r < by_values) r = by_values;
  if (r < by_blocks) r = by_blocks;
  return r;
}

// out[j], j < nacc * c: the sum of each block's partial, blocks in order.
// partial(row_begin, row_end, acc) adds its rows into acc (zeroed).
template <class Partial>
void reduce_channels(const BnShape& s, std::size_t nacc, double* out, Partial&& partial) {
  const std::size_t rb = rows_per_block(s), blocks = num_chunks(s.n, rb), width = nacc * s.c;
  std::vector<double> parts(blocks * width, 0.0);
  parallel_for(s.n, rb, [&](std::size_t b, std::size_t e) { partial(b, e, parts.data() + (b / rb) * width); });
  for (std::size_t j = 0; j < width; ++j) out[j] = 0.0;
  for (std::size_t k = 0; k < blocks; ++k)
    for (std::size_t j = 0; j < width; ++j) out[j] += parts[k * width + j];
}

template <class T>
void normalize(const T* x, T* y, const BnShape& s, const std::vector<T>& mean, const std::vector<T>& scale,
               const std::vector<T>& shift) {
  const std::size_t rb = rows_per_block(s), stride = s.c * s.l;
  dispatch([&](auto isa) {
    parallel_for(s.n, rb, [&](std::size_t b, std::size_t e) {
      kernels::bn_normalize<decltype(isa)::value, T>(x + b * stride, y + b * stride, e - b, s.c, s.l, mean.data(),
                                                      scale.data(), shift.data());
    });
  });
}

// y = (x - mean) * invstd * weight + bias with per-channel coefficients in T.
template <class T>
void affine_output(const T* x, T* y, const BnShape& s, const T* weight, const T* bias, const double* mean,
                   const double* invstd) {
  std::vector<T> m(s.c), scale(s.c), shift(s.c);
  for (std::size_t ch = 0; ch < s.c; ++ch) {
    m[ch] = static_cast<T>(mean[ch]);
    scale[ch] = static_cast<T>(invstd[ch] * (weight ? static_cast<double>(weight[ch]) : 1.0));
    shift[ch] = bias ? bias[ch] : T(0);
  }
  normalize(x, y, s, m, scale, shift);
}

}  // namespace

template <class T>
void batch_norm_forward_train(const T* x, T* y, BnShape s, const T* weight, const T* bias, double eps,
                              T* running_mean, T* running_var, double momentum, double* save_mean,
                              double* save_invstd) {
  const std::size_t m = s.n * s.l, stride = s.c * s.l;
  if (m == 0) {  // empty batch: nothing to normalize, statistics unchanged
    for (std::size_t ch = 0; ch < s.c; ++ch) {
      save_mean[ch] = 0.0;
      save_invstd[ch] = 1.0 / std::sqrt(eps);
    }
    return;
  }
  if (running_var && m < 2)
    throw std::invalid_argument("x: expected more than 1 value per channel to update running_var");
  // Per block of rows, in one pass: the sums of d = x - k and of d^2 in
  // double, k each channel's first value in the block. The block's mean is
  // k + s1 / n and its sum of squared deviations s2 - s1^2 / n; k is one of
  // the block's n values, so (k - mean)^2 <= (n - 1) var and that
  // subtraction loses at most log10(n) of double's 16 digits. One pass
  // where a two-pass mean and deviation read and converted the block twice
  // (forward, 4096 x 1024 float32, one thread: 1.57-1.66 -> 1.50-1.59 ms).
  // Then the blocks are merged in block order with Chan et al.'s update.
  const std::size_t rb = rows_per_block(s), blocks = num_chunks(s.n, rb), c = s.c;
  std::vector<double> parts(blocks * 3 * c, 0.0);  // per block: k then mean, s1, s2 then m2
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_for(s.n, rb, [&](std::size_t b, std::size_t e) {
      double* mean = parts.data() + (b / rb) * 3 * c;
      double* s1 = mean + c;
      double* m2 = mean + 2 * c;
      const T* xb = x + b * stride;
      for (std::size_t ch = 0; ch < c; ++ch) mean[ch] = static_cast<double>(xb[ch * s.l]);
      kernels::bn_shifted_sums<I, T>(xb, e - b, c, s.l, mean, s1, m2);
      const double count = static_cast<double>((e - b) * s.l);
      for (std::size_t ch = 0; ch < c; ++ch) {
        const double d = s1[ch] / count;
        mean[ch] += d;
        const double v = m2[ch] - s1[ch] * d;
        m2[ch] = v < 0.0 ? 0.0 : v;  // rounding below 0 clamped; NaN stays NaN
      }
    });
  });
  double* m2 = save_invstd;  // holds the sum of squared deviations until the end
  for (std::size_t ch = 0; ch < c; ++ch) {
    save_mean[ch] = parts[ch];
    m2[ch] = parts[2 * c + ch];
  }
  double count = static_cast<double>(rb < s.n ? rb * s.l : m);
  for (std::size_t k = 1; k < blocks; ++k) {
    const double nb = static_cast<double>(((k + 1) * rb < s.n ? rb : s.n - k * rb) * s.l);
    const double total = count + nb;
    const double* bm = parts.data() + k * 3 * c;
    for (std::size_t ch = 0; ch < c; ++ch) {
      const double delta = bm[ch] - save_mean[ch];
      save_mean[ch] += delta * (nb / total);
      m2[ch] += bm[2 * c + ch] + delta * delta * (count * nb / total);
    }
    count = total;
  }
  const double md = static_cast<double>(m);
  for (std::size_t ch = 0; ch < s.c; ++ch) {
    const double var = m2[ch] / md;  // biased: normalizes the batch
    if (running_mean)
      running_mean[ch] = static_cast<T>(momentum * save_mean[ch] + (1.0 - momentum) * running_mean[ch]);
    if (running_var)  // unbiased, like torch
      running_var[ch] = static_cast<T>(momentum * (var * md / (md - 1.0)) + (1.0 - momentum) * running_var[ch]);
    save_invstd[ch] = 1.0 / std::sqrt(var + eps);
  }
  affine_output(x, y, s, weight, bias, save_mean, save_invstd);
}

template <class T>
void batch_norm_forward_eval(const T* x, T* y, BnShape s, const T* weight, const T* bias, double eps,
                             const T* running_mean, const T* running_var, double* save_mean, double* save_invstd) {
  for (std::size_t ch = 0; ch < s.c; ++ch) {
    save_mean[ch] = static_cast<double>(running_mean[ch]);
    save_invstd[ch] = 1.0 / std::sqrt(static_cast<double>(running_var[ch]) + eps);
  }
  affine_output(x, y, s, weight, bias, save_mean, save_invstd);
}

template <class T>
void batch_norm_backward(const T* x, const T* dy, T* dx, BnShape s, const T* weight, const double* save_mean,
                         const double* save_invstd, bool training, T* grad_weight, T* grad_bias) {
  const std::size_t m = s.n * s.l, stride = s.c * s.l;
  std::vector<double> sums(2 * s.c);
  dispatch([&](auto isa) {
    reduce_channels(s, 2, sums.data(), [&](std::size_t b, std::size_t e, double* acc) {
      kernels::bn_dot<decltype(isa)::value, T>(x + b * stride, dy + b * stride, e - b, s.c, s.l, save_mean, acc,
                                               acc + s.c);
    });
  });
  const double* sum_dy = sums.data();
  const double* sum_dy_xmu = sums.data() + s.c;
  std::vector<T> mean(s.c), k(s.c), mean_dy(s.c), scale(s.c);
  for (std::size_t ch = 0; ch < s.c; ++ch) {
    const double invstd = save_invstd[ch];
    if (grad_bias) grad_bias[ch] = static_cast<T>(sum_dy[ch]);
    if (grad_weight) grad_weight[ch] = static_cast<T>(sum_dy_xmu[ch] * invstd);
    mean[ch] = static_cast<T>(save_mean[ch]);
    // With batch statistics, the mean and variance depend on x too:
    // dx = (dy - mean(dy) - xhat * mean(dy * xhat)) * invstd * w.
    const bool batch = training && m > 0;
    k[ch] = batch ? static_cast<T>(sum_dy_xmu[ch] * invstd * invstd / static_cast<double>(m)) : T(0);
    mean_dy[ch] = batch ? static_cast<T>(sum_dy[ch] / static_cast<double>(m)) : T(0);
    scale[ch] = static_cast<T>(invstd * (weight ? static_cast<double>(weight[ch]) : 1.0));
  }
  const std::size_t rb = rows_per_block(s);
  dispatch([&](auto isa) {
    parallel_for(s.n, rb, [&](std::size_t b, std::size_t e) {
      kernels::bn_input_grad<decltype(isa)::value, T>(x + b * stride, dy + b * stride, dx + b * stride, e - b, s.c,
                                                      s.l, mean.data(), k.data(), mean_dy.data(), scale.data());
    });
  });
}

// ---------------------------------------------------------------- GELU
// float32 on a SIMD ISA: the vector kernels; otherwise (scalar ISA, float64)
// the libm reference loops.
template <class T>
void gelu_forward(const T* x, T* y, std::size_t n, bool tanh_approx) {
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_for(n, kGrain / 4, [&](std::size_t b, std::size_t e) {
      if constexpr (std::is_same_v<T, float> && I != Isa::scalar)
        kernels::gelu_forward_f32<I>(x + b, y + b, e - b, tanh_approx);
      else
        kernels::gelu_forward<T>(x + b, y + b, e - b, tanh_approx);
    });
  });
}

template <class T>
void gelu_backward(const T* x, const T* dy, T* dx, std::size_t n, bool tanh_approx) {
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_for(n, kGrain / 4, [&](std::size_t b, std::size_t e) {
      if constexpr (std::is_same_v<T, float> && I != Isa::scalar)
        kernels::gelu_backward_f32<I>(x + b, dy + b, dx + b, e - b, tanh_approx);
      else
        kernels::gelu_backward<T>(x + b, dy + b, dx + b, e - b, tanh_approx);
    });
  });
}

#define SLIMGRAD_NN_ENTRY(T)                                                                                    \
  template void dropout<T>(const T*, T*, std::size_t, double, std::uint64_t, std::uint64_t);                    \
  template void batch_norm_forward_train<T>(const T*, T*, BnShape, const T*, const T*, double, T*, T*, double, \
                                            double*, double*);                                                 \
  template void batch_norm_forward_eval<T>(const T*, T*, BnShape, const T*, const T*, double, const T*,        \
                                           const T*, double*, double*);                                        \
  template void batch_norm_backward<T>(const T*, const T*, T*, BnShape, const T*, const double*, const double*, \
                                       bool, T*, T*);                                                          \
  template void gelu_forward<T>(const T*, T*, std::size_t, bool);                                              \
  template void gelu_backward<T>(const T*, const T*, T*, std::size_t, bool);
SLIMGRAD_NN_ENTRY(float)
SLIMGRAD_NN_ENTRY(double)
#undef SLIMGRAD_NN_ENTRY

}  // namespace slimgrad
