// Transformer kernels written once against simd.hpp, instantiated by
// kernels_transformer_avx2.cpp and kernels_transformer_avx512.cpp.
//  - LayerNorm: two passes over the row in float lanes (mean, then the sum of
//    squared deviations: no cancellation), 4 accumulators, reduced once;
//    rows are short (hidden size) and stay in L1. Parameter gradients add
//    each row into double accumulators (float widened with load_wide).
//  - Softmax: t = fma(scale, s, bias) (bias 0 or -inf), row max, exp_f32 of
//    nn's kernels (about 1 ulp), terms that were -inf forced to exactly 0
//    (exp_f32 clamps its argument), sum in float lanes, one multiply by 1/sum.
//  - Tails: the row's last k < W values go through a stack copy padded with
//    -inf (softmax max / exp) or 0 (sums): same arithmetic as the body.
//  - Hessian tile: MR x NV vectors of float accumulators in registers; per
//    packed row k, NV loads of the B panel and MR broadcasts of the A panel,
//    MR * NV FMAs. Partial tiles are computed whole (panels are zero-padded)
//    and only their valid part is added to H (vector adds for whole rows,
//    float partials widened to double with vcvtps2pd for a double H).
#pragma once

#include <limits>
#include <type_traits>

// exp_f32, load_wide from the nn area, without its instantiation block (that
// belongs to the nn units: here it would define nn's kernels a second time).
#pragma push_macro("SLIMGRAD_UNIT_ISA")
#undef SLIMGRAD_UNIT_ISA
#include "kernels_nn_simd.hpp"
#pragma pop_macro("SLIMGRAD_UNIT_ISA")
#include "slimgrad/transformer.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

template <Isa I>
inline float row_sum(const float* x, std::size_t n) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  V a0 = V::zero(), a1 = V::zero(), a2 = V::zero(), a3 = V::zero();
  std::size_t j = 0;
  for (; j + 4 * W <= n; j += 4 * W) {
    a0 = a0 + V::load(x + j);
    a1 = a1 + V::load(x + j + W);
    a2 = a2 + V::load(x + j + 2 * W);
    a3 = a3 + V::load(x + j + 3 * W);
  }
  for (; j + W <= n; j += W) a0 = a0 + V::load(x + j);
  if (j < n) a1 = a1 + load_partial<V>(x + j, n - j);
  return reduce_sum((a0 + a1) + (a2 + a3));
}

// sum of (x - m)^2 over the row
template <Isa I>
inline float row_sqdev(const float* x, std::size_t n, float m) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  const V mv = V::set1(m);
  const auto diff = [&](std::size_t j, std::size_t k) {
    if (k == W) return V::load(x + j) - mv;
    float tmp[W];
    for (std::size_t t = 0; t < W; ++t) tmp[t] = t < k ? x[j + t] : m;  // pad with the mean: adds 0
    return V::load(tmp) - mv;
  };
  return reduce_sum(sum_sq_diff<V>(n, diff, [](std::size_t, std::size_t, V) {}));
}

}  // namespace

template <Isa I>
void layer_norm_rows(const float* x, float* y, std::size_t rows, std::size_t n, const float* w, const float* b,
                     float eps, float* mean, float* rstd) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  const float inv_n = n ? 1.0f / static_cast<float>(n) : 0.0f;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    const float m = row_sum<I>(xr, n) * inv_n;
    const float rs = 1.0f / std::sqrt(row_sqdev<I>(xr, n, m) * inv_n + eps);
    mean[r] = m;
    rstd[r] = rs;
    const V mv = V::set1(m), rv = V::set1(rs);
    for (std::size_t j = 0; j < n; j += W) {
      const std::size_t k = n - j < W ? n - j : W;
      const V xv = k == W ? V::load(xr + j) : load_partial<V>(xr + j, k);
      V v = (xv - mv) * rv;
      if (w) v = v * (k == W ? V::load(w + j) : load_partial<V>(w + j, k));
      if (b) v = v + (k == W ? V::load(b + j) : load_partial<V>(b + j, k));
      if (k == W)
        v.store(yr + j);
      else
        store_partial(yr + j, k, v);
    }
  }
}

template <Isa I>
void layer_norm_input_grad(const float* x, const float* dy, float* dx, std::size_t rows, std::size_t n,
                           const float* w, const float* mean, const float* rstd) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  const float inv_n = n ? 1.0f / static_cast<float>(n) : 0.0f;
  auto ld = [](const float* p, std::size_t k) { return k == W ? V::load(p) : load_partial<V>(p, k); };
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    const float* gr = dy + r * n;
    float* dr = dx + r * n;
    const V mv = V::set1(mean[r]), rv = V::set1(rstd[r]);
    V sg = V::zero(), sgx = V::zero();
    for (std::size_t j = 0; j < n; j += W) {  // padded lanes load g = 0: they add nothing
      const std::size_t k = n - j < W ? n - j : W;
      V g = ld(gr + j, k);
      if (w) g = g * ld(w + j, k);
      sg = sg + g;
      sgx = fma(g, (ld(xr + j, k) - mv) * rv, sgx);
    }
    const V mg = V::set1(reduce_sum(sg) * inv_n), mgx = V::set1(reduce_sum(sgx) * inv_n);
    for (std::size_t j = 0; j < n; j += W) {
      const std::size_t k = n - j < W ? n - j : W;
      V g = ld(gr + j, k);
      if (w) g = g * ld(w + j, k);
      const V xhat = (ld(xr + j, k) - mv) * rv;
      const V v = rv * (g - mg - xhat * mgx);
      if (k == W)
        v.store(dr + j);
      else
        store_partial(dr + j, k, v);
    }
  }
}

template <Isa I>
void layer_norm_param_grad(const float* x, const float* dy, std::size_t rows, std::size_t n, const float* mean,
                           const float* rstd, double* gw, double* gb) {
  using D = Vec<double, I>;
  constexpr std::size_t W = D::width;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    const float* gr = dy + r * n;
    const D mv = D::set1(mean[r]), rv = D::set1(rstd[r]);
    std::size_t j = 0;
    for (; j + W <= n; j += W) {
      const D g = load_wide<I>(gr + j);
      const D xhat = (load_wide<I>(xr + j) - mv) * rv;
      fma(g, xhat, D::load(gw + j)).store(gw + j);
      (D::load(gb + j) + g).store(gb + j);
    }
    for (; j < n; ++j) {  // tail: the same double operations, one lane
      const double g = gr[j];
      gw[j] = std::fma(g, (static_cast<double>(xr[j]) - mean[r]) * static_cast<double>(rstd[r]), gw[j]);
      gb[j] += g;
    }
  }
}

template <Isa I>
void softmax_rows(const float* s, float* p, std::size_t rows, std::size_t n, const float* bias, float scale) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  const float ninf = -std::numeric_limits<float>::infinity();
  const V sc = V::set1(scale), lowest = V::set1(std::numeric_limits<float>::lowest());
  // t = scale * s + bias for W lanes from j (k valid; the rest -inf)
  auto term = [&](const float* sr, std::size_t j, std::size_t k) {
    if (k == W) return fma(sc, V::load(sr + j), bias ? V::load(bias + j) : V::zero());
    float ts[W], tb[W];
    for (std::size_t t = 0; t < W; ++t) {
      ts[t] = t < k ? sr[j + t] : 0.0f;
      tb[t] = t < k ? (bias ? bias[j + t] : 0.0f) : ninf;
    }
    return fma(sc, V::load(ts), V::load(tb));
  };
  for (std::size_t r = 0; r < rows; ++r) {
    const float* sr = s + r * n;
    float* pr = p + r * n;
    V mx = V::set1(ninf);
    for (std::size_t j = 0; j < n; j += W) mx = max(mx, term(sr, j, n - j < W ? n - j : W));
    float tmax[W];
    mx.store(tmax);
    float m = ninf;
    for (std::size_t t = 0; t < W; ++t) m = tmax[t] > m ? tmax[t] : m;
    if (m == ninf) {  // every term -inf: no key kept
      for (std::size_t j = 0; j < n; ++j) pr[j] = 0.0f;
      continue;
    }
    const V mv = V::set1(m);
    V sum = V::zero();
    for (std::size_t j = 0; j < n; j += W) {
      const std::size_t k = n - j < W ? n - j : W;
      const V t = term(sr, j, k);
      const V e = select(lt(t, lowest), V::zero(), exp_f32<I>(t - mv));
      sum = sum + e;
      if (k == W)
        e.store(pr + j);
      else
        store_partial(pr + j, k, e);
    }
    const V inv = V::set1(1.0f / reduce_sum(sum));
    std::size_t j = 0;
    for (; j + W <= n; j += W) (V::load(pr + j) * inv).store(pr + j);
    if (j < n) store_partial(pr + j, n - j, load_partial<V>(pr + j, n - j) * inv);
  }
}

template <Isa I>
void softmax_backward_rows(const float* p, const float* dp, float* ds, std::size_t rows, std::size_t n,
                           float scale) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  auto ld = [](const float* q, std::size_t k) { return k == W ? V::load(q) : load_partial<V>(q, k); };
  for (std::size_t r = 0; r < rows; ++r) {
    const float* pr = p + r * n;
    const float* gr = dp + r * n;
    float* dr = ds + r * n;
    V acc = V::zero();
    for (std::size_t j = 0; j < n; j += W) {
      const std::size_t k = n - j < W ? n - j : W;
      acc = fma(ld(pr + j, k), ld(gr + j, k), acc);
    }
    const V dot = V::set1(reduce_sum(acc)), sc = V::set1(scale);
    for (std::size_t j = 0; j < n; j += W) {
      const std::size_t k = n - j < W ? n - j : W;
      const V v = sc * (ld(pr + j, k) * (ld(gr + j, k) - dot));
      if (k == W)
        v.store(dr + j);
      else
        store_partial(dr + j, k, v);
    }
  }
}

// R rows of out from i, columns [j, j + NV * W) of which `cols` are valid.
// Per t: NV loads of B's row, shared by the R rows, R broadcasts, R * NV FMAs.
template <Isa I, std::size_t R, std::size_t NV>
SLIMGRAD_ALWAYS_INLINE void head_tile(const float* a, std::size_t ai, std::size_t at, const float* b,
                                      std::size_t ldb, std::size_t k, std::size_t i, std::size_t j,
                                      std::size_t cols, float* out, std::size_t ldo) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  V acc[R][NV];
  for (auto& r : acc)
    for (auto& v : r) v = V::zero();
  for (std::size_t t = 0; t < k; ++t) {
    const float* bt = b + t * ldb + j;
    V bv[NV];
    for (std::size_t v = 0; v < NV; ++v) {
      const std::size_t c = v * W;
      bv[v] = c + W <= cols ? V::load(bt + c) : load_partial<V>(bt + c, cols > c ? cols - c : 0);
    }
    for (std::size_t r = 0; r < R; ++r) {
      const V av = V::set1(a[(i + r) * ai + t * at]);
      for (std::size_t v = 0; v < NV; ++v) acc[r][v] = fma(av, bv[v], acc[r][v]);
    }
  }
  for (std::size_t r = 0; r < R; ++r)
    for (std::size_t v = 0; v < NV; ++v) {
      const std::size_t c = v * W;
      if (c < cols) store_n(out + (i + r) * ldo + j + c, std::min(W, cols - c), acc[r][v]);
    }
}

template <Isa I>
void head_product(const float* a, std::size_t ai, std::size_t at, const float* b, std::size_t ldb, std::size_t m,
                  std::size_t k, std::size_t n, float* out, std::size_t ldo) {
  constexpr std::size_t W = Vec<float, I>::width, NV = 2, R = 4;  // 8 accumulators
  for (std::size_t j = 0; j < n; j += NV * W) {
    const std::size_t cols = std::min(NV * W, n - j);
    std::size_t i = 0;
    for (; i + R <= m; i += R) head_tile<I, R, NV>(a, ai, at, b, ldb, k, i, j, cols, out, ldo);
    for (; i < m; ++i) head_tile<I, 1, NV>(a, ai, at, b, ldb, k, i, j, cols, out, ldo);
  }
}

template <Isa I, class T>
void hessian_tile(const float* a, const float* b, std::size_t kc, T* h, std::size_t ldh, std::size_t rows,
                  std::size_t cols) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width, MR = HessianTile<I>::mr, NR = HessianTile<I>::nr, NV = NR / W;
  static_assert(NR % W == 0, "a tile is a whole number of vectors wide");
  V acc[MR][NV];
#pragma GCC unroll 16
  for (std::size_t r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) acc[r][v] = V::zero();
  for (std::size_t k = 0; k < kc; ++k) {
    V bv[NV];
#pragma GCC unroll 4
    for (std::size_t v = 0; v < NV; ++v) bv[v] = V::load(b + k * NR + v * W);
#pragma GCC unroll 16
    for (std::size_t r = 0; r < MR; ++r) {
      const V av = V::set1(a[k * MR + r]);
#pragma GCC unroll 4
      for (std::size_t v = 0; v < NV; ++v) acc[r][v] = fma(av, bv[v], acc[r][v]);
    }
  }
  float out[MR][NR];
  for (std::size_t r = 0; r < MR; ++r)
    for (std::size_t v = 0; v < NV; ++v) acc[r][v].store(&out[r][v * W]);
  if (cols == NR) {  // whole rows of the tile: vector adds into H (widened for double)
    using D = Vec<T, I>;
    for (std::size_t r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < NR; c += D::width) {
        if constexpr (std::is_same_v<T, float>)
          (D::load(h + r * ldh + c) + V::load(&out[r][c])).store(h + r * ldh + c);
        else
          (D::load(h + r * ldh + c) + load_wide<I>(&out[r][c])).store(h + r * ldh + c);
      }
    return;
  }
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) h[r * ldh + c] += static_cast<T>(out[r][c]);
}

}  // namespace slimgrad::kernels

#define SLIMGRAD_TRANSFORMER_INSTANTIATE(I)                                                                        \
  template void slimgrad::kernels::layer_norm_rows<I>(const float*, float*, std::size_t, std::size_t, const float*, \
                                                      const float*, float, float*, float*);                        \
  template void slimgrad::kernels::layer_norm_input_grad<I>(const float*, const float*, float*, std::size_t,       \
                                                            std::size_t, const float*, const float*, const float*); \
  template void slimgrad::kernels::layer_norm_param_grad<I>(const float*, const float*, std::size_t, std::size_t,  \
                                                            const float*, const float*, double*, double*);         \
  template void slimgrad::kernels::softmax_rows<I>(const float*, float*, std::size_t, std::size_t, const float*,   \
                                                   float);                                                         \
  template void slimgrad::kernels::softmax_backward_rows<I>(const float*, const float*, float*, std::size_t,       \
                                                            std::size_t, float);                                   \
  template void slimgrad::kernels::head_product<I>(const float*, std::size_t, std::size_t, const float*,         \
                                                   std::size_t, std::size_t, std::size_t, std::size_t, float*,     \
                                                   std::size_t);                                                   \
  template void slimgrad::kernels::hessian_tile<I, float>(const float*, const float*, std::size_t, float*,         \
                                                          std::size_t, std::size_t, std::size_t);                  \
  template void slimgrad::kernels::hessian_tile<I, double>(const float*, const float*, std::size_t, double*,       \
                                                           std::size_t, std::size_t, std::size_t);

// The generated per-ISA units (CMakeLists.txt, SLIMGRAD_KERNEL_AREAS) define
// SLIMGRAD_UNIT_ISA and instantiate here.
#ifdef SLIMGRAD_UNIT_ISA
SLIMGRAD_TRANSFORMER_INSTANTIATE(SLIMGRAD_UNIT_ISA)
#endif  // SLIMGRAD_UNIT_ISA
