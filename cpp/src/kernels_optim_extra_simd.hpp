// Extra optimizer kernels written once against simd.hpp, instantiated by
// the per-ISA units the build generates (CMakeLists.txt).
//  - Elementwise updates (LAMB, Adafactor, clip, accumulate): unaligned
//    loads, FMAs where the formula has a multiply-add (one rounding less than
//    the scalar oracle); the last k < width elements go through
//    load_partial/store_partial, i.e. the same arithmetic as the body.
//  - Reductions accumulate in T lanes within one work item (<= 32K elements)
//    and return a double; the entry points add item partials in order.
//  - AdamW8bit and its 8-bit moment codec (raw intrinsics for the int8 <->
//    float conversions): kernels_optim_extra_8bit_simd.hpp, included here
//    (same per-ISA units, same instantiation list below).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "slimgrad/optim_extra.hpp"
#include "slimgrad/simd.hpp"
#include "kernels_optim_extra_8bit_simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

// Full-vector or partial load/store at i with k valid lanes.
template <class V>
V ld(const typename V::Scalar* p, std::size_t k) {
  return k == V::width ? V::load(p) : load_partial<V>(p, k);
}
template <class V>
void st(typename V::Scalar* p, std::size_t k, V x) {
  if (k == V::width)
    x.store(p);
  else
    store_partial(p, k, x);
}
// body(i, k) over [0, n) in steps of the vector width, k lanes valid.
template <class V, class Body>
void for_vecs(std::size_t n, Body&& body) {
  std::size_t i = 0;
  for (; i + V::width <= n; i += V::width) body(i, V::width);
  if (i < n) body(i, n - i);
}

// x with lanes >= k zeroed: padded tail lanes must not reach a reduction
// (with eps = 0 they compute 0/0).
template <class V>
V first_lanes(V x, std::size_t k) {
  if (k == V::width) return x;
  typename V::Scalar tmp[V::width] = {};
  store_partial(tmp, k, x);
  return V::load(tmp);
}

// Like for_vecs, but first peels up to a 64-byte boundary of `anchor` (the
// array written), so the main loop's loads and stores of arrays with the
// same offset in a cache line never split a line (NumPy places large arrays
// 16 bytes past a page boundary; split accesses cost ~40 % with AVX-512).
// Only for elementwise kernels: a peel moves lane boundaries, which would
// change the order of a reduction with the address.
template <class V, class Body>
void for_vecs_aligned(std::size_t n, const void* anchor, Body&& body) {
  using S = typename V::Scalar;
  const std::size_t mis = reinterpret_cast<std::uintptr_t>(anchor) % 64;
  std::size_t peel = mis % sizeof(S) ? 0 : ((64 - mis) % 64) / sizeof(S);
  peel = std::min(peel, n);
  std::size_t i = 0;
  while (i < peel) {
    const std::size_t k = std::min(V::width, peel - i);
    body(i, k);
    i += k;
  }
  for (; i + V::width <= n; i += V::width) body(i, V::width);
  if (i < n) body(i, n - i);
}

}  // namespace

// ------------------------------------------------------------------ LAMB
template <class V, class T>
V lamb_r(V p, V m, V v, const LambCoef<T>& c) {
  const V r = (m * V::set1(c.inv_bc1)) / (sqrt(v * V::set1(c.inv_bc2)) + V::set1(c.eps));
  return fma(V::set1(c.weight_decay), p, r);
}

template <Isa I, class T>
void lamb_moments(const T* p, const T* g, T* m, T* v, std::size_t n, const LambCoef<T>& c, double* sums) {
  using V = Vec<T, I>;
  const V b1 = V::set1(c.beta1), omb1 = V::set1(c.one_minus_beta1), b2 = V::set1(c.beta2),
          omb2 = V::set1(c.one_minus_beta2);
  V pp = V::zero(), rr = V::zero();
  for_vecs<V>(n, [&](std::size_t i, std::size_t k) {
    for (const void* q : {static_cast<const void*>(p + i), static_cast<const void*>(g + i),
                          static_cast<const void*>(m + i), static_cast<const void*>(v + i)})
      prefetch(q, kPrefetchAhead);
    const V gi = ld<V>(g + i, k), pi = ld<V>(p + i, k);
    const V mi = fma(b1, ld<V>(m + i, k), omb1 * gi);
    const V vi = fma(b2, ld<V>(v + i, k), omb2 * gi * gi);
    st(m + i, k, mi);
    st(v + i, k, vi);
    const V r = first_lanes(lamb_r(pi, mi, vi, c), k);
    pp = fma(pi, pi, pp);
    rr = fma(r, r, rr);
  });
  sums[0] += static_cast<double>(reduce_sum(pp));
  sums[1] += static_cast<double>(reduce_sum(rr));
}

template <Isa I, class T>
void lamb_apply(T* p, const T* m, const T* v, std::size_t n, const LambCoef<T>& c, T lr_ratio) {
  using V = Vec<T, I>;
  const V nl = V::set1(-lr_ratio);
  for_vecs_aligned<V>(n, p, [&](std::size_t i, std::size_t k) {
    for (const void* q : {static_cast<const void*>(p + i), static_cast<const void*>(m + i),
                          static_cast<const void*>(v + i)})
      prefetch(q, kPrefetchAhead);
    const V pi = ld<V>(p + i, k);
    st(p + i, k, fma(nl, lamb_r(pi, ld<V>(m + i, k), ld<V>(v + i, k), c), pi));
  });
}

// ------------------------------------------------------- clip / accumulate
template <Isa I, class T>
double sum_abs(const T* x, std::size_t n) {
  using V = Vec<T, I>;
  V s0 = V::zero(), s1 = V::zero();
  std::size_t i = 0;
  for (; i + 2 * V::width <= n; i += 2 * V::width) {
    prefetch_ahead(x + i, 2 * V::width * sizeof(T));
    s0 = s0 + abs(V::load(x + i));
    s1 = s1 + abs(V::load(x + i + V::width));
  }
  for_vecs<V>(n - i, [&](std::size_t j, std::size_t k) { s0 = s0 + abs(ld<V>(x + i + j, k)); });
  return static_cast<double>(reduce_sum(s0 + s1));
}

template <Isa I, class T>
double max_abs(const T* x, std::size_t n) {
  using V = Vec<T, I>;
  V a = V::zero(), bad = V::zero();
  for_vecs<V>(n, [&](std::size_t i, std::size_t k) {
    prefetch(x + i, kPrefetchAhead);
    const V xi = ld<V>(x + i, k);
    a = max(a, abs(xi));
    bad = bad + (xi - xi);  // NaN once any element was NaN or inf
  });
  T lanes[V::width];
  a.store(lanes);
  double r = 0.0;
  for (T l : lanes) r = std::max(r, static_cast<double>(l));
  if (!std::isfinite(static_cast<double>(reduce_sum(bad)))) {
    // Slow path, only for non-finite input: NaN wins (torch's inf norm).
    for (std::size_t i = 0; i < n; ++i) {
      if (std::isnan(x[i])) return static_cast<double>(x[i]);
      r = std::max(r, std::fabs(static_cast<double>(x[i])));
    }
  }
  return r;
}

template <Isa I, class T>
double sum_abs_pow(const T* x, std::size_t n, double q) {
  // Arbitrary exponents have no SIMD pow; a plain loop in double.
  double s = 0.0;
  for (std::size_t i = 0; i < n; ++i) s += std::pow(std::fabs(static_cast<double>(x[i])), q);
  return s;
}

template <Isa I, class T>
void scale(T* x, std::size_t n, T s) {
  using V = Vec<T, I>;
  const V vs = V::set1(s);
  for_vecs_aligned<V>(n, x, [&](std::size_t i, std::size_t k) { st(x + i, k, ld<V>(x + i, k) * vs); });
}

template <Isa I, class T>
void clamp_abs(T* x, std::size_t n, T c) {
  using V = Vec<T, I>;
  const V hi = V::set1(c), lo = V::set1(-c);
  // simd min/max return their first argument when it is NaN: NaN stays.
  for_vecs_aligned<V>(n, x, [&](std::size_t i, std::size_t k) { st(x + i, k, min(max(ld<V>(x + i, k), lo), hi)); });
}

template <Isa I, class T>
void accumulate(T* acc, const T* g, std::size_t n, T s) {
  using V = Vec<T, I>;
  const V vs = V::set1(s);
  if (s == T(1))
    for_vecs_aligned<V>(n, acc, [&](std::size_t i, std::size_t k) {
      st(acc + i, k, ld<V>(acc + i, k) + ld<V>(g + i, k));
    });
  else
    for_vecs_aligned<V>(n, acc, [&](std::size_t i, std::size_t k) {
      st(acc + i, k, fma(vs, ld<V>(g + i, k), ld<V>(acc + i, k)));
    });
}

// ------------------------------------------------------------- Adafactor
template <Isa I, class T>
void sq_rows_cols(const T* g, std::size_t rows, std::size_t cols, std::size_t ld_, double* row_sq,
                  double* col_sq) {
  using V = Vec<T, I>;
  for (std::size_t c = 0; c < cols; ++c) col_sq[c] = 0.0;
  for (std::size_t r = 0; r < rows; ++r) {
    const T* gr = g + r * ld_;
    V s = V::zero();
    for_vecs<V>(cols, [&](std::size_t i, std::size_t k) {
      const V x = ld<V>(gr + i, k);
      s = fma(x, x, s);
    });
    row_sq[r] = static_cast<double>(reduce_sum(s));
    for (std::size_t c = 0; c < cols; ++c) col_sq[c] += static_cast<double>(gr[c]) * gr[c];
  }
}

template <class V, class T>
V factored_u(V g, V row, V col, V rmean, V eps1sq, bool maximize) {
  const V gi = maximize ? V::zero() - g : g;
  const V est = max((row * col) / rmean, eps1sq);
  return (V::set1(T(1)) / sqrt(est)) * gi;
}

template <Isa I, class T>
double adafactor_factored_norm(const T* g, const T* row, const T* col, std::size_t rows, std::size_t cols,
                               std::size_t ld_, T rmean, T eps1sq, bool maximize) {
  using V = Vec<T, I>;
  const V rm = V::set1(rmean), e = V::set1(eps1sq);
  double total = 0.0;
  for (std::size_t r = 0; r < rows; ++r) {
    const V rv = V::set1(row[r]);
    V s = V::zero();
    for_vecs<V>(cols, [&](std::size_t i, std::size_t k) {
      prefetch(g + r * ld_ + i, kPrefetchAhead);
      const V u = first_lanes(
          factored_u<V, T>(ld<V>(g + r * ld_ + i, k), rv, ld<V>(col + i, k), rm, e, maximize), k);
      s = fma(u, u, s);
    });
    total += static_cast<double>(reduce_sum(s));
  }
  return total;
}

template <Isa I, class T>
void adafactor_factored_apply(T* p, const T* g, const T* row, const T* col, std::size_t rows, std::size_t cols,
                              std::size_t ld_, T rmean, T eps1sq, bool maximize, T decay, T alpha) {
  using V = Vec<T, I>;
  const V rm = V::set1(rmean), e = V::set1(eps1sq), d = V::set1(decay), na = V::set1(-alpha);
  for (std::size_t r = 0; r < rows; ++r) {
    const V rv = V::set1(row[r]);
    T* pr = p + r * ld_;
    for_vecs<V>(cols, [&](std::size_t i, std::size_t k) {
      prefetch(g + r * ld_ + i, kPrefetchAhead);
      prefetch(pr + i, kPrefetchAhead);
      const V u = factored_u<V, T>(ld<V>(g + r * ld_ + i, k), rv, ld<V>(col + i, k), rm, e, maximize);
      st(pr + i, k, fma(na, u, ld<V>(pr + i, k) * d));
    });
  }
}

template <Isa I, class T>
double adafactor_vector_var(const T* g, T* var, std::size_t n, T w, T eps1sq, bool maximize) {
  using V = Vec<T, I>;
  const V e = V::set1(eps1sq), one = V::set1(T(1));
  const bool low = w < T(0.5);
  const V vw = V::set1(w), vomw = V::set1(T(1) - w);
  V s = V::zero();
  for_vecs<V>(n, [&](std::size_t i, std::size_t k) {
    V gi = ld<V>(g + i, k);
    if (maximize) gi = V::zero() - gi;
    const V a = ld<V>(var + i, k), b = gi * gi;
    // torch's lerp: a + w*(b-a) for w < 0.5, else b - (b-a)*(1-w)
    const V nv = low ? fma(vw, b - a, a) : b - (b - a) * vomw;
    st(var + i, k, nv);
    const V u = first_lanes((one / sqrt(max(nv, e))) * gi, k);
    s = fma(u, u, s);
  });
  return static_cast<double>(reduce_sum(s));
}

template <Isa I, class T>
void adafactor_vector_apply(T* p, const T* g, const T* var, std::size_t n, T eps1sq, bool maximize, T decay,
                            T alpha) {
  using V = Vec<T, I>;
  const V e = V::set1(eps1sq), one = V::set1(T(1)), d = V::set1(decay), na = V::set1(-alpha);
  for_vecs<V>(n, [&](std::size_t i, std::size_t k) {
    V gi = ld<V>(g + i, k);
    if (maximize) gi = V::zero() - gi;
    const V u = (one / sqrt(max(ld<V>(var + i, k), e))) * gi;
    st(p + i, k, fma(na, u, ld<V>(p + i, k) * d));
  });
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
#define SLIMGRAD_EXTRA_INST(T)                                                                                  \
  template void lamb_moments<SLIMGRAD_UNIT_ISA, T>(const T*, const T*, T*, T*, std::size_t, const LambCoef<T>&, \
                                           double*);                                                            \
  template void lamb_apply<SLIMGRAD_UNIT_ISA, T>(T*, const T*, const T*, std::size_t, const LambCoef<T>&, T);   \
  template void adamw8bit<SLIMGRAD_UNIT_ISA, T>(T*, const T*, std::int8_t*, std::uint8_t*, float*, float*, std::size_t,\
                                        const Adam8Coef<T>&);                                                   \
  template double sum_abs<SLIMGRAD_UNIT_ISA, T>(const T*, std::size_t);                                         \
  template double max_abs<SLIMGRAD_UNIT_ISA, T>(const T*, std::size_t);                                         \
  template double sum_abs_pow<SLIMGRAD_UNIT_ISA, T>(const T*, std::size_t, double);                             \
  template void scale<SLIMGRAD_UNIT_ISA, T>(T*, std::size_t, T);                                                \
  template void clamp_abs<SLIMGRAD_UNIT_ISA, T>(T*, std::size_t, T);                                            \
  template void accumulate<SLIMGRAD_UNIT_ISA, T>(T*, const T*, std::size_t, T);                                 \
  template void sq_rows_cols<SLIMGRAD_UNIT_ISA, T>(const T*, std::size_t, std::size_t, std::size_t, double*, double*);\
  template double adafactor_factored_norm<SLIMGRAD_UNIT_ISA, T>(const T*, const T*, const T*, std::size_t, std::size_t,\
                                                        std::size_t, T, T, bool);                               \
  template void adafactor_factored_apply<SLIMGRAD_UNIT_ISA, T>(T*, const T*, const T*, const T*, std::size_t,   \
                                                       std::size_t, std::size_t, T, T, bool, T, T);             \
  template double adafactor_vector_var<SLIMGRAD_UNIT_ISA, T>(const T*, T*, std::size_t, T, T, bool);            \
  template void adafactor_vector_apply<SLIMGRAD_UNIT_ISA, T>(T*, const T*, const T*, std::size_t, T, bool, T, T);
SLIMGRAD_EXTRA_INST(float)
SLIMGRAD_EXTRA_INST(double)
#undef SLIMGRAD_EXTRA_INST
template void quantize_signed<SLIMGRAD_UNIT_ISA>(const float*, std::int8_t*, float*, std::size_t);
template void quantize_unsigned<SLIMGRAD_UNIT_ISA>(const float*, std::uint8_t*, float*, std::size_t);
template void dequantize_signed<SLIMGRAD_UNIT_ISA>(const std::int8_t*, const float*, float*, std::size_t);
template void dequantize_unsigned<SLIMGRAD_UNIT_ISA>(const std::uint8_t*, const float*, float*, std::size_t);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
