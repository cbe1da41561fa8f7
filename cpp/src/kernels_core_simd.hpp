// Core kernels written once against simd.hpp, instantiated by
// the per-ISA units the build generates (CMakeLists.txt).
//  - axpy: unaligned loads, one FMA per vector; the tail uses a padded copy.
//  - sum_squares: four independent accumulators (hides FMA latency) in T
//    lanes; called on blocks of kSumBlock elements, so float32 error stays
//    ~1e-6 relative, and the caller adds block partials in double.
//  - find_nonfinite: vector test per 4 vectors, exact index found by a
//    scalar rescan of the one group that failed.
#pragma once

#include <cmath>
#include <cstdint>

#include "slimgrad/core.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
// Mask helpers take intrinsic types, which argument-dependent lookup cannot
// tie to slimgrad::simd: bring the vocabulary in by name.
using namespace slimgrad::simd;

template <Isa I, class T>
void axpy(T* y, const T* x, T alpha, std::size_t n) {
  using V = simd::Vec<T, I>;
  const V a = V::set1(alpha);
  std::size_t i = 0;
  for (; i + V::width <= n; i += V::width) fma(a, V::load(x + i), V::load(y + i)).store(y + i);
  if (i < n) {
    const std::size_t k = n - i;
    simd::store_partial(y + i, k,
                        fma(a, simd::load_partial<V>(x + i, k), simd::load_partial<V>(y + i, k)));
  }
}

template <Isa I, class T>
double sum_squares(const T* x, std::size_t n) {
  using V = simd::Vec<T, I>;
  constexpr std::size_t W = V::width;
  V s0 = V::zero(), s1 = V::zero(), s2 = V::zero(), s3 = V::zero();
  std::size_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    prefetch_ahead(x + i, 4 * W * sizeof(T));
    const V a = V::load(x + i), b = V::load(x + i + W), c = V::load(x + i + 2 * W),
            d = V::load(x + i + 3 * W);
    s0 = fma(a, a, s0);
    s1 = fma(b, b, s1);
    s2 = fma(c, c, s2);
    s3 = fma(d, d, s3);
  }
  for (; i + W <= n; i += W) {
    const V a = V::load(x + i);
    s0 = fma(a, a, s0);
  }
  if (i < n) {
    const V a = simd::load_partial<V>(x + i, n - i);
    s1 = fma(a, a, s1);
  }
  return static_cast<double>(reduce_sum((s0 + s1) + (s2 + s3)));
}

template <Isa I, class T>
std::size_t find_nonfinite(const T* x, std::size_t n) {
  using V = simd::Vec<T, I>;
  return simd::find_first_failing<V>(
      x, n, [](V a) { return isfinite(a); }, [](T a) { return std::isfinite(a); });
}

template <Isa I>
void widen_half(const std::uint16_t* x, float* y, std::size_t n, bool bf16) {
  constexpr std::size_t W = simd::Vec<float, I>::width;
  std::size_t i = 0;
  if (bf16) {
    for (; i + W <= n; i += W) simd::load_bf16<I>(x + i).store(y + i);
    for (; i < n; ++i) y[i] = simd::bf16_to_float(x[i]);
  } else {
    for (; i + W <= n; i += W) simd::load_f16<I>(x + i).store(y + i);
    for (; i < n; ++i) y[i] = simd::half_to_float(x[i]);
  }
}

template <Isa I>
void narrow_half(const float* x, std::uint16_t* y, std::size_t n, bool bf16) {
  using V = simd::Vec<float, I>;
  constexpr std::size_t W = V::width;
  std::size_t i = 0;
  if (bf16) {
    for (; i + W <= n; i += W) simd::store_bf16(y + i, V::load(x + i));
    for (; i < n; ++i) y[i] = simd::float_to_bf16(x[i]);
  } else {
    for (; i + W <= n; i += W) simd::store_f16(y + i, V::load(x + i));
    for (; i < n; ++i) y[i] = simd::float_to_half(x[i]);
  }
}

template <Isa I>
void stream_probe(float* p, const float* g, float* m, float* v, std::size_t n) {
  using V = simd::Vec<float, I>;
  std::size_t i = 0;
  // Peel up to a 64-byte boundary of p: a wide store that splits a cache line
  // costs a second line access (NumPy's arrays start 16 bytes past one), and
  // the probe must show the machine's best streaming speed.
  for (; i < n && reinterpret_cast<std::uintptr_t>(p + i) % 64 != 0; ++i) {
    p[i] += g[i];
    m[i] += g[i];
    v[i] += g[i];
  }
  for (; i + V::width <= n; i += V::width) {
    const V gi = V::load(g + i);
    (V::load(p + i) + gi).store(p + i);
    (V::load(m + i) + gi).store(m + i);
    (V::load(v + i) + gi).store(v + i);
  }
  for (; i < n; ++i) {
    p[i] += g[i];
    m[i] += g[i];
    v[i] += g[i];
  }
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void axpy<SLIMGRAD_UNIT_ISA, float>(float*, const float*, float, std::size_t);
template void axpy<SLIMGRAD_UNIT_ISA, double>(double*, const double*, double, std::size_t);
template double sum_squares<SLIMGRAD_UNIT_ISA, float>(const float*, std::size_t);
template double sum_squares<SLIMGRAD_UNIT_ISA, double>(const double*, std::size_t);
template std::size_t find_nonfinite<SLIMGRAD_UNIT_ISA, float>(const float*, std::size_t);
template std::size_t find_nonfinite<SLIMGRAD_UNIT_ISA, double>(const double*, std::size_t);
template void stream_probe<SLIMGRAD_UNIT_ISA>(float*, const float*, float*, float*, std::size_t);
template void widen_half<SLIMGRAD_UNIT_ISA>(const std::uint16_t*, float*, std::size_t, bool);
template void narrow_half<SLIMGRAD_UNIT_ISA>(const float*, std::uint16_t*, std::size_t, bool);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
