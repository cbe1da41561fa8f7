// nn kernels written once against simd.hpp, instantiated by the per-ISA
// units the build generates (CMakeLists.txt); dropout: kernels_nn_dropout_x86.hpp.
//  - BatchNorm sums accumulate in Vec<double, I>: float32 input is widened
//    W floats at a time (W = double lanes; vcvtps2pd, see load_wide). For a
//    2-D (n, c) input the channels are the contiguous axis, so lanes are
//    channels and each lane adds its rows in row order (groups of kRowGroup
//    rows streamed together): the same order, hence the same double sums, as
//    the scalar reference. For (n, c, l) input each
//    (row, channel) segment of l elements is reduced in lanes, then added to
//    the channel's total; the segment's tail runs in a scalar loop (padded
//    lanes would add (0 - mean)^2 otherwise).
//  - Elementwise passes (normalize, input gradient) run in T with one FMA;
//    channel tails go through load_partial/store_partial.
//  - GELU (float32): vector exp and A&S 7.1.26, see nn.hpp for the error.
//  - dropout_batches: the batch loop shared by both ISAs; the Philox rounds
//    and the masking are ISA-specific intrinsics in the ISA files.
#pragma once

#include <cstdint>
#include <cstring>

#include "slimgrad/nn.hpp"
#include "slimgrad/philox.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

// W = Vec<double, I>::width elements of T, as doubles.
template <Isa I>
inline Vec<double, I> load_wide(const double* p) {
  return Vec<double, I>::load(p);
}
template <Isa I>
inline Vec<double, I> load_wide(const float* p);
#if defined(__AVX2__)
template <>
inline Vec<double, Isa::avx2> load_wide<Isa::avx2>(const float* p) {
  return {_mm256_cvtps_pd(_mm_loadu_ps(p))};
}
#endif
#if defined(__AVX512F__)
template <>
inline Vec<double, Isa::avx512> load_wide<Isa::avx512>(const float* p) {
  return {_mm512_cvtps_pd(_mm256_loadu_ps(p))};
}
#endif
// exp(x) for float lanes: x clamped to [-87, 88] (so 2^n stays a normal
// float), x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
// n ln2), e^r by its degree-7 Taylor polynomial (truncation < 1e-8 relative),
// times 2^n built in the exponent bits. About 1 ulp; NaN stays NaN.
template <Isa I>
inline Vec<float, I> exp_f32(Vec<float, I> x);
template <Isa I>
inline Vec<float, I> exp_poly(Vec<float, I> x, Vec<float, I> n) {
  using V = Vec<float, I>;
  V r = fma(n, V::set1(-0.693359375f), x);
  r = fma(n, V::set1(2.12194440e-4f), r);
  V p = V::set1(1.0f / 5040);
  p = fma(p, r, V::set1(1.0f / 720));
  p = fma(p, r, V::set1(1.0f / 120));
  p = fma(p, r, V::set1(1.0f / 24));
  p = fma(p, r, V::set1(1.0f / 6));
  p = fma(p, r, V::set1(0.5f));
  p = fma(p, r, V::set1(1.0f));
  return fma(p, r, V::set1(1.0f));
}
#if defined(__AVX2__)
template <>
inline Vec<float, Isa::avx2> exp_f32<Isa::avx2>(Vec<float, Isa::avx2> x) {
  using V = Vec<float, Isa::avx2>;
  x = min(max(x, V::set1(-87.0f)), V::set1(88.0f));
  const __m256i ni = _mm256_cvtps_epi32(_mm256_mul_ps(x.v, _mm256_set1_ps(1.44269504f)));  // round to nearest
  const V p = exp_poly<Isa::avx2>(x, V{_mm256_cvtepi32_ps(ni)});
  const __m256i pow2n = _mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23);
  return p * V{_mm256_castsi256_ps(pow2n)};
}
#endif
#if defined(__AVX512F__)
template <>
inline Vec<float, Isa::avx512> exp_f32<Isa::avx512>(Vec<float, Isa::avx512> x) {
  using V = Vec<float, Isa::avx512>;
  x = min(max(x, V::set1(-87.0f)), V::set1(88.0f));
  const __m512i ni = _mm512_cvtps_epi32(_mm512_mul_ps(x.v, _mm512_set1_ps(1.44269504f)));
  const V p = exp_poly<Isa::avx512>(x, V{_mm512_cvtepi32_ps(ni)});
  const __m512i pow2n = _mm512_slli_epi32(_mm512_add_epi32(ni, _mm512_set1_epi32(127)), 23);
  return p * V{_mm512_castsi512_ps(pow2n)};
}
#endif

// GELU pieces for one vector (see nn.hpp). Exact form: with a = |x| / sqrt 2,
// c = t P(t) e^(-a^2) ~ erfc(a) (A&S 7.1.26), Phi(x) = x >= 0 ? 1 - c/2 : c/2
// (the negative tail without cancellation), and e^(-a^2) = e^(-x^2/2) also
// gives the density for the derivative. Tanh form: s = sigmoid(2u).
template <Isa I>
struct GeluTerms {
  Vec<float, I> cdf, dcdf;  // y = x cdf;  dy/dx = dcdf
};
template <Isa I>
inline GeluTerms<I> gelu_terms(Vec<float, I> x, bool tanh_approx) {
  using V = Vec<float, I>;
  const V one = V::set1(1.0f), half = V::set1(0.5f);
  if (tanh_approx) {
    const V beta = V::set1(0.7978845608f), kappa = V::set1(0.044715f);
    const V x2 = x * x;
    const V u = beta * fma(kappa * x2, x, x);
    const V e = exp_f32<I>(V::set1(-2.0f) * u);
    const V s = one / (one + e);
    // d/dx x s(2u) = s + x s (1 - s) 2 u',  u' = beta (1 + 3 kappa x^2)
    const V du = beta * fma(V::set1(3.0f * 0.044715f), x2, one);
    return {s, fma(x * s * (one - s), V::set1(2.0f) * du, s)};
  }
  const V a = abs(x) * V::set1(0.70710678f);
  const V t = one / fma(V::set1(0.3275911f), a, one);
  V q = V::set1(1.061405429f);
  q = fma(q, t, V::set1(-1.453152027f));
  q = fma(q, t, V::set1(1.421413741f));
  q = fma(q, t, V::set1(-0.284496736f));
  q = fma(q, t, V::set1(0.254829592f));
  const V e = exp_f32<I>(V::zero() - a * a);
  const V half_c = half * (q * t * e);
  const V cdf = select(lt(x, V::zero()), half_c, one - half_c);
  return {cdf, fma(x, V::set1(0.39894228f) * e, cdf)};
}

template <Isa I, class T>
inline Vec<double, I> load_wide_partial(const T* p, std::size_t k) {
  T tmp[Vec<double, I>::width] = {};
  std::memcpy(tmp, p, k * sizeof(T));
  return load_wide<I>(tmp);
}

// 2-D input: the per-channel accumulators (c doubles, in L1 for usual c)
// are loaded once per group of rows and the group's rows are streamed in
// order; a group small enough that its rows stay in L1 across the channel
// loop. Walking all rows of one channel vector instead would stride by the
// row length and thrash L1's sets (rows of 4 KiB map to the same set).
constexpr std::size_t kRowGroup = 4;

}  // namespace

// Per-channel sums of d = x - shift[ch] and of d^2, in double.
template <Isa I, class T>
void bn_shifted_sums(const T* x, std::size_t rows, std::size_t c, std::size_t l, const double* shift, double* s1,
                     double* s2) {
  using D = Vec<double, I>;
  constexpr std::size_t W = D::width;
  if (l == 1) {
    for (std::size_t r0 = 0; r0 < rows; r0 += kRowGroup) {
      const std::size_t nr = rows - r0 < kRowGroup ? rows - r0 : kRowGroup;
      const T* xr = x + r0 * c;
      std::size_t ch = 0;
      for (; ch + W <= c; ch += W) {
        const D k = D::load(shift + ch);
        D a = D::load(s1 + ch), q = D::load(s2 + ch);
        for (std::size_t r = 0; r < nr; ++r) {
          const D d = load_wide<I>(xr + r * c + ch) - k;
          a = a + d;
          q = fma(d, d, q);
        }
        a.store(s1 + ch);
        q.store(s2 + ch);
      }
      if (ch < c) {  // padded lanes: x = 0 and shift = 0, so they add 0
        const std::size_t n = c - ch;
        const D k = load_partial<D>(shift + ch, n);
        D a = load_partial<D>(s1 + ch, n), q = load_partial<D>(s2 + ch, n);
        for (std::size_t r = 0; r < nr; ++r) {
          const D d = load_wide_partial<I>(xr + r * c + ch, n) - k;
          a = a + d;
          q = fma(d, d, q);
        }
        store_partial(s1 + ch, n, a);
        store_partial(s2 + ch, n, q);
      }
    }
    return;
  }
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < c; ++ch) {
      const T* p = x + (r * c + ch) * l;
      const D k = D::set1(shift[ch]);
      D a0 = D::zero(), a1 = D::zero(), q0 = D::zero(), q1 = D::zero();
      std::size_t j = 0;
      for (; j + 2 * W <= l; j += 2 * W) {
        const D d0 = load_wide<I>(p + j) - k, d1 = load_wide<I>(p + j + W) - k;
        a0 = a0 + d0;
        a1 = a1 + d1;
        q0 = fma(d0, d0, q0);
        q1 = fma(d1, d1, q1);
      }
      double t1 = reduce_sum(a0 + a1), t2 = reduce_sum(q0 + q1);
      for (; j < l; ++j) {
        const double d = static_cast<double>(p[j]) - shift[ch];
        t1 += d;
        t2 += d * d;
      }
      s1[ch] += t1;
      s2[ch] += t2;
    }
}

template <Isa I, class T>
void bn_dot(const T* x, const T* dy, std::size_t rows, std::size_t c, std::size_t l, const double* mean,
            double* sum_dy, double* sum_dy_xmu) {
  using D = Vec<double, I>;
  constexpr std::size_t W = D::width;
  if (l == 1) {
    for (std::size_t r0 = 0; r0 < rows; r0 += kRowGroup) {
      const std::size_t nr = rows - r0 < kRowGroup ? rows - r0 : kRowGroup;
      const T* xr = x + r0 * c;
      const T* gr = dy + r0 * c;
      std::size_t ch = 0;
      for (; ch + W <= c; ch += W) {
        const D m = D::load(mean + ch);
        D a = D::load(sum_dy + ch), b = D::load(sum_dy_xmu + ch);
        for (std::size_t r = 0; r < nr; ++r) {
          const D g = load_wide<I>(gr + r * c + ch);
          a = a + g;
          b = fma(g, load_wide<I>(xr + r * c + ch) - m, b);
        }
        a.store(sum_dy + ch);
        b.store(sum_dy_xmu + ch);
      }
      if (ch < c) {  // padded lanes have dy = 0
        const std::size_t k = c - ch;
        const D m = load_partial<D>(mean + ch, k);
        D a = load_partial<D>(sum_dy + ch, k), b = load_partial<D>(sum_dy_xmu + ch, k);
        for (std::size_t r = 0; r < nr; ++r) {
          const D g = load_wide_partial<I>(gr + r * c + ch, k);
          a = a + g;
          b = fma(g, load_wide_partial<I>(xr + r * c + ch, k) - m, b);
        }
        store_partial(sum_dy + ch, k, a);
        store_partial(sum_dy_xmu + ch, k, b);
      }
    }
    return;
  }
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < c; ++ch) {
      const std::size_t o = (r * c + ch) * l;
      const D m = D::set1(mean[ch]);
      D a = D::zero(), b = D::zero();
      std::size_t j = 0;
      for (; j + W <= l; j += W) {
        const D g = load_wide<I>(dy + o + j);
        a = a + g;
        b = fma(g, load_wide<I>(x + o + j) - m, b);
      }
      double ta = reduce_sum(a), tb = reduce_sum(b);
      for (; j < l; ++j) {
        const double g = static_cast<double>(dy[o + j]);
        ta += g;
        tb += g * (static_cast<double>(x[o + j]) - mean[ch]);
      }
      sum_dy[ch] += ta;
      sum_dy_xmu[ch] += tb;
    }
}

template <Isa I, class T>
void bn_normalize(const T* x, T* y, std::size_t rows, std::size_t c, std::size_t l, const T* mean, const T* scale,
                  const T* shift) {
  using V = Vec<T, I>;
  constexpr std::size_t W = V::width;
  if (l == 1) {
    for (std::size_t r = 0; r < rows; ++r) {
      const T* xr = x + r * c;
      T* yr = y + r * c;
      std::size_t ch = 0;
      for (; ch + W <= c; ch += W)
        fma(V::load(xr + ch) - V::load(mean + ch), V::load(scale + ch), V::load(shift + ch)).store(yr + ch);
      if (ch < c) {
        const std::size_t k = c - ch;
        store_partial(yr + ch, k,
                      fma(load_partial<V>(xr + ch, k) - load_partial<V>(mean + ch, k),
                          load_partial<V>(scale + ch, k), load_partial<V>(shift + ch, k)));
      }
    }
    return;
  }
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < c; ++ch) {
      const std::size_t o = (r * c + ch) * l;
      const V m = V::set1(mean[ch]), s = V::set1(scale[ch]), b = V::set1(shift[ch]);
      std::size_t j = 0;
      for (; j + W <= l; j += W) fma(V::load(x + o + j) - m, s, b).store(y + o + j);
      if (j < l) store_partial(y + o + j, l - j, fma(load_partial<V>(x + o + j, l - j) - m, s, b));
    }
}

template <Isa I, class T>
void bn_input_grad(const T* x, const T* dy, T* dx, std::size_t rows, std::size_t c, std::size_t l, const T* mean,
                   const T* k, const T* mean_dy, const T* scale) {
  using V = Vec<T, I>;
  constexpr std::size_t W = V::width;
  // (dy - mean_dy - (x - mean) k) scale, as fma(mean - x, k, dy - mean_dy) * scale
  if (l == 1) {
    for (std::size_t r = 0; r < rows; ++r) {
      const T* xr = x + r * c;
      const T* gr = dy + r * c;
      T* dr = dx + r * c;
      std::size_t ch = 0;
      for (; ch + W <= c; ch += W) {
        const V t = V::load(gr + ch) - V::load(mean_dy + ch);
        (fma(V::load(mean + ch) - V::load(xr + ch), V::load(k + ch), t) * V::load(scale + ch)).store(dr + ch);
      }
      if (ch < c) {
        const std::size_t n = c - ch;
        const V t = load_partial<V>(gr + ch, n) - load_partial<V>(mean_dy + ch, n);
        store_partial(dr + ch, n,
                      fma(load_partial<V>(mean + ch, n) - load_partial<V>(xr + ch, n), load_partial<V>(k + ch, n),
                          t) *
                          load_partial<V>(scale + ch, n));
      }
    }
    return;
  }
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t ch = 0; ch < c; ++ch) {
      const std::size_t o = (r * c + ch) * l;
      const V m = V::set1(mean[ch]), kk = V::set1(k[ch]), md = V::set1(mean_dy[ch]), s = V::set1(scale[ch]);
      std::size_t j = 0;
      for (; j + W <= l; j += W)
        (fma(m - V::load(x + o + j), kk, V::load(dy + o + j) - md) * s).store(dx + o + j);
      if (j < l) {
        const std::size_t n = l - j;
        store_partial(dx + o + j, n,
                      fma(m - load_partial<V>(x + o + j, n), kk, load_partial<V>(dy + o + j, n) - md) * s);
      }
    }
}

template <Isa I>
void gelu_forward_f32(const float* x, float* y, std::size_t n, bool tanh_approx) {
  using V = Vec<float, I>;
  std::size_t i = 0;
  // x (and dy) 2 KiB ahead: the erf and exp polynomials keep the out-of-order
  // window full (4096 x 1024 fwd+bwd: 2.07-2.69 -> 1.78-1.82 ms at 2 threads).
  for (; i + V::width <= n; i += V::width) {
    simd::prefetch(x + i, simd::kPrefetchAhead);
    const V v = V::load(x + i);
    (v * gelu_terms<I>(v, tanh_approx).cdf).store(y + i);
  }
  if (i < n) {
    const V v = load_partial<V>(x + i, n - i);
    store_partial(y + i, n - i, v * gelu_terms<I>(v, tanh_approx).cdf);
  }
}

template <Isa I>
void gelu_backward_f32(const float* x, const float* dy, float* dx, std::size_t n, bool tanh_approx) {
  using V = Vec<float, I>;
  std::size_t i = 0;
  for (; i + V::width <= n; i += V::width) {
    simd::prefetch(x + i, simd::kPrefetchAhead);
    simd::prefetch(dy + i, simd::kPrefetchAhead);
    (V::load(dy + i) * gelu_terms<I>(V::load(x + i), tanh_approx).dcdf).store(dx + i);
  }
  if (i < n) {
    const std::size_t k = n - i;
    store_partial(dx + i, k, load_partial<V>(dy + i, k) * gelu_terms<I>(load_partial<V>(x + i, k), tanh_approx).dcdf);
  }
}

// The batch loop of dropout. Gen (per ISA) turns Gen::kBlocks consecutive
// Philox blocks (kElems = 4 * kBlocks elements) into either the masked
// output of a full aligned batch (apply) or the raw words (words). A batch
// is aligned to a multiple of kElems in the global index, so chunks that
// start on such a multiple (the entry point's do) never take the word path
// except for the last partial batch.
template <class Gen, class T>
void dropout_batches(const Gen& gen, const T* x, T* out, std::size_t n, std::uint64_t first, T scale) {
  constexpr std::size_t E = Gen::kElems;
  std::size_t i = 0;
  while (i < n) {
    const std::uint64_t g = first + i;
    const std::uint64_t base = g - g % E;
    if (g == base && n - i >= E) {
      // x 2 KiB ahead: the Philox rounds keep the out-of-order window full
      // (4096 x 1024 fwd+bwd: 2.03-2.08 -> 1.81-1.90 ms at 2 threads).
      simd::prefetch_ahead(x + i, E * sizeof(T));
      gen.apply(x + i, out + i, base / 4, scale);
      i += E;
      continue;
    }
    std::uint32_t w[E];
    gen.words(base / 4, w);
    for (std::size_t k = static_cast<std::size_t>(g - base); k < E && i < n; ++k, ++i)
      out[i] = w[k] >= gen.threshold ? x[i] * scale : T(0);
  }
}

}  // namespace slimgrad::kernels


// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
#include "kernels_nn_dropout_x86.hpp"

namespace slimgrad::kernels {
#define SLIMGRAD_NN_INSTANTIATE(T)                                                                              \
  template void bn_shifted_sums<SLIMGRAD_UNIT_ISA, T>(const T*, std::size_t, std::size_t, std::size_t,           \
                                                      const double*, double*, double*);                          \
  template void bn_dot<SLIMGRAD_UNIT_ISA, T>(const T*, const T*, std::size_t, std::size_t, std::size_t, const double*,\
                                     double*, double*);                                                         \
  template void bn_normalize<SLIMGRAD_UNIT_ISA, T>(const T*, T*, std::size_t, std::size_t, std::size_t, const T*,\
                                           const T*, const T*);                                                 \
  template void bn_input_grad<SLIMGRAD_UNIT_ISA, T>(const T*, const T*, T*, std::size_t, std::size_t, std::size_t,\
                                            const T*, const T*, const T*, const T*);
SLIMGRAD_NN_INSTANTIATE(float)
SLIMGRAD_NN_INSTANTIATE(double)
#undef SLIMGRAD_NN_INSTANTIATE
template void gelu_forward_f32<SLIMGRAD_UNIT_ISA>(const float*, float*, std::size_t, bool);
template void gelu_backward_f32<SLIMGRAD_UNIT_ISA>(const float*, const float*, float*, std::size_t, bool);

}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
