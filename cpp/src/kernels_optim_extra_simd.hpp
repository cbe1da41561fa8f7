// Extra optimizer kernels written once against simd.hpp, instantiated by
// the per-ISA units the build generates (CMakeLists.txt).
//  - Elementwise updates (LAMB, Adafactor, clip, accumulate): unaligned
//    loads, FMAs where the formula has a multiply-add (one rounding less than
//    the scalar oracle); the last k < width elements go through
//    load_partial/store_partial, i.e. the same arithmetic as the body.
//  - Reductions accumulate in T lanes within one work item (<= 32K elements)
//    and return a double; the entry points add item partials in order.
//  - AdamW8bit works per block of 256: one pass decodes the codes, updates
//    and keeps the block's new absmax in registers (moments to an L1 buffer),
//    a second short pass encodes, so memory is streamed once. The codec needs
//    int8 <-> float conversions, which the Vec vocabulary lacks: raw AVX2 /
//    AVX-512 intrinsics below, in an anonymous namespace so the per-ISA copies
//    never meet at link time. The codec functions use only multiplies, one
//    square root and round-to-nearest-even conversions (no multiply-add to
//    contract), so their codes equal the scalar oracle's bit for bit. Per
//    element the step takes 3 square roots (update, m code, sqrt(v) code) and
//    1 division; on AVX-512 the two encoders' roots come from the 14-bit rsqrt
//    estimate (see encode_*_block_fast).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "slimgrad/optim_extra.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

// ------------------------------------------------- int8 <-> float codec
template <Isa I>
struct Codec;

#if defined(__AVX2__) && !defined(__AVX512F__)
template <>
struct Codec<Isa::avx2> {
  using V = Vec<float, Isa::avx2>;
  static V load_i8(const std::int8_t* c) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c));
    return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b))};
  }
  static V load_u8(const std::uint8_t* c) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c));
    return {_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b))};
  }
  // Rounds to nearest even (the default MXCSR mode) and saturates.
  static void store_i8(std::int8_t* c, V x) {
    const __m256i i = _mm256_cvtps_epi32(x.v);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(c), _mm_packs_epi16(w, w));
  }
  static void store_u8(std::uint8_t* c, V x) {
    const __m256i i = _mm256_cvtps_epi32(x.v);
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(c), _mm_packus_epi16(w, w));
  }
  // The exact root: with 256-bit vectors it is as fast here as an rsqrt
  // estimate plus the Newton step 8 bits would need (measured).
  static V sqrt_approx(V y) { return sqrt(y); }
};
#endif

#if defined(__AVX512F__)
template <>
struct Codec<Isa::avx512> {
  using V = Vec<float, Isa::avx512>;
  static V load_i8(const std::int8_t* c) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c));
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b))};
  }
  static V load_u8(const std::uint8_t* c) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c));
    return {_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(b))};
  }
  static void store_i8(std::int8_t* c, V x) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(c), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(x.v)));
  }
  static void store_u8(std::uint8_t* c, V x) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(c), _mm512_cvtusepi32_epi8(_mm512_cvtps_epi32(x.v)));
  }
  // sqrt(y) for y >= 0 from the 14-bit rsqrt estimate: a code needs 8 bits
  // (127*sqrt(y) is off by < 0.008). Floored like the AVX2 version.
  static V sqrt_approx(V y) {
    return {_mm512_mul_ps(y.v, _mm512_rsqrt14_ps(_mm512_max_ps(y.v, _mm512_set1_ps(1e-30f))))};
  }
};
#endif

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

// Block codec on n <= 256 floats in a padded buffer (multiple of width).
template <class V>
float lanes_max(V a) {
  float lanes[V::width];
  a.store(lanes);
  float r = 0.0f;
  for (float l : lanes) r = std::max(r, l);
  return r;
}
// NaN if any element is NaN or infinite (see the scalar oracle).
template <class V>
float finite_or_nan(float a, V bad) {
  return std::isfinite(reduce_sum(bad)) ? a : NAN;
}
template <Isa I>
float absmax_block(const float* x, std::size_t n) {
  using V = Vec<float, I>;
  V a = V::zero(), bad = V::zero();
  for (std::size_t i = 0; i < n; i += V::width) {
    const V xi = V::load(x + i);
    a = max(a, abs(xi));
    bad = bad + (xi - xi);  // 0 for finite lanes, NaN otherwise
  }
  return finite_or_nan(lanes_max(a), bad);
}
// Below the smallest normal float 1/a overflows: such blocks become zeros,
// and so do non-finite blocks (scale NaN), as in the scalar oracle.
constexpr float kMinScale = 1.17549435e-38f;

template <Isa I>
void encode_signed_block(const float* x, std::int8_t* c, float* scale, std::size_t n_padded, float a) {
  using V = Vec<float, I>;
  *scale = a;
  if (!(a >= kMinScale)) {
    std::fill(c, c + n_padded, 0);
    return;
  }
  const V inv = V::set1(1.0f / a), k = V::set1(127.0f), zero = V::zero();
  for (std::size_t i = 0; i < n_padded; i += V::width) {
    const V xi = V::load(x + i);
    const V z = sqrt(abs(xi) * inv) * k;
    Codec<I>::store_i8(c + i, select(lt(xi, zero), zero - z, z));
  }
}
template <Isa I>
void encode_unsigned_block(const float* x, std::uint8_t* c, float* scale, std::size_t n_padded, float a) {
  using V = Vec<float, I>;
  *scale = a;
  if (!(a >= kMinScale)) {
    std::fill(c, c + n_padded, 0);
    return;
  }
  const V inv = V::set1(1.0f / a), k = V::set1(255.0f);
  for (std::size_t i = 0; i < n_padded; i += V::width)
    Codec<I>::store_u8(c + i, sqrt(abs(V::load(x + i)) * inv) * k);
}
// The optimizer's encoders: as above but with sqrt_approx (the square root
// is the bottleneck of the step: sqrtps has a fraction of the multiplier's
// throughput). A code may then differ by one from the exact encoder's where
// 127*sqrt(y) lies within 0.01 of a rounding boundary; the codec functions
// (quantize_moment) keep the exact, ISA-independent codes.
template <Isa I>
void encode_signed_block_fast(const float* x, std::int8_t* c, float* scale, std::size_t n_padded, float a) {
  using V = Vec<float, I>;
  *scale = a;
  if (!(a >= kMinScale)) {
    std::fill(c, c + n_padded, 0);
    return;
  }
  const V inv = V::set1(1.0f / a), k = V::set1(127.0f), zero = V::zero();
  for (std::size_t i = 0; i < n_padded; i += V::width) {
    const V xi = V::load(x + i);
    const V z = Codec<I>::sqrt_approx(abs(xi) * inv) * k;
    Codec<I>::store_i8(c + i, select(lt(xi, zero), zero - z, z));
  }
}
template <Isa I>
void encode_unsigned_block_fast(const float* x, std::uint8_t* c, float* scale, std::size_t n_padded, float a) {
  using V = Vec<float, I>;
  *scale = a;
  if (!(a >= kMinScale)) {
    std::fill(c, c + n_padded, 0);
    return;
  }
  const V inv = V::set1(1.0f / a), k = V::set1(255.0f);
  for (std::size_t i = 0; i < n_padded; i += V::width)
    Codec<I>::store_u8(c + i, Codec<I>::sqrt_approx(abs(V::load(x + i)) * inv) * k);
}

template <Isa I>
void decode_signed_block(const std::int8_t* c, float scale, float* x, std::size_t n_padded) {
  using V = Vec<float, I>;
  const V inv = V::set1(1.0f / 127.0f), s = V::set1(scale);
  for (std::size_t i = 0; i < n_padded; i += V::width) {
    const V t = Codec<I>::load_i8(c + i) * inv;
    ((t * abs(t)) * s).store(x + i);
  }
}
template <Isa I>
void decode_unsigned_block(const std::uint8_t* c, float scale, float* x, std::size_t n_padded) {
  using V = Vec<float, I>;
  const V inv = V::set1(1.0f / 255.0f), s = V::set1(scale);
  for (std::size_t i = 0; i < n_padded; i += V::width) {
    const V t = Codec<I>::load_u8(c + i) * inv;
    ((t * t) * s).store(x + i);
  }
}

template <class T>
T torch_lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
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
    const V pi = ld<V>(p + i, k);
    st(p + i, k, fma(nl, lamb_r(pi, ld<V>(m + i, k), ld<V>(v + i, k), c), pi));
  });
}

// ------------------------------------------------------------- AdamW8bit
template <Isa I, class T>
void adamw8bit(T* p, const T* g, std::int8_t* m, std::uint8_t* v, float* ms, float* vs, std::size_t n,
               const Adam8Coef<T>& c) {
  alignas(64) float mb[kQuantBlock], vb[kQuantBlock];
  alignas(64) std::int8_t mc[kQuantBlock];
  alignas(64) std::uint8_t vc[kQuantBlock];
  alignas(64) T pb[kQuantBlock], gb[kQuantBlock];
  using VF = Vec<float, I>;
  for (std::size_t b = 0; b < n; b += kQuantBlock) {
    const std::size_t k = std::min(kQuantBlock, n - b);
    const std::size_t blk = b / kQuantBlock;
    // A partial last block runs on zero-padded copies: zeros decode to zero
    // moments, stay zero and cannot raise the block's absmax.
    const bool full = k == kQuantBlock;
    const std::size_t kp = (k + VF::width - 1) / VF::width * VF::width;
    std::int8_t* mcode = m + b;
    std::uint8_t* vcode = v + b;
    T* pp = p + b;
    const T* gp = g + b;
    if (!full) {
      std::fill(mc, mc + kQuantBlock, std::int8_t(0));
      std::fill(vc, vc + kQuantBlock, std::uint8_t(0));
      std::fill(pb, pb + kQuantBlock, T(0));
      std::fill(gb, gb + kQuantBlock, T(0));
      std::copy(m + b, m + b + k, mc);
      std::copy(v + b, v + b + k, vc);
      std::copy(p + b, p + b + k, pb);
      std::copy(g + b, g + b + k, gb);
      mcode = mc;
      vcode = vc;
      pp = pb;
      gp = gb;
    }
    float amax_m, amax_v;
    if constexpr (std::is_same_v<T, float>) {
      // One pass: decode, update, keep the block's new absmax in registers.
      using V = VF;
      const V b1 = V::set1(c.beta1), omb1 = V::set1(c.one_minus_beta1), b2 = V::set1(c.beta2),
              omb2 = V::set1(c.one_minus_beta2), step = V::set1(-c.step_size), ibc = V::set1(c.inv_sqrt_bc2),
              eps = V::set1(c.eps), decay = V::set1(c.decay);
      const V inv_m = V::set1(1.0f / 127.0f), inv_v = V::set1(1.0f / 255.0f), sm = V::set1(ms[blk]),
              sv_scale = V::set1(vs[blk]);
      V am = V::zero(), av = V::zero(), bad_m = V::zero(), bad_v = V::zero();
      for (std::size_t i = 0; i < kp; i += V::width) {
        V gi = V::load(gp + i);
        if (c.maximize) gi = V::zero() - gi;
        const V tm = Codec<I>::load_i8(mcode + i) * inv_m;
        const V tv = Codec<I>::load_u8(vcode + i) * inv_v;
        const V m0 = (tm * abs(tm)) * sm, sv = (tv * tv) * sv_scale;
        const V mi = fma(b1, m0, omb1 * gi);
        const V svi = sqrt(fma(b2, sv * sv, omb2 * gi * gi));
        const V denom = fma(svi, ibc, eps);
        fma(step, mi / denom, V::load(pp + i) * decay).store(pp + i);
        mi.store(mb + i);
        svi.store(vb + i);
        am = max(am, abs(mi));
        av = max(av, svi);
        bad_m = bad_m + (mi - mi);
        bad_v = bad_v + (svi - svi);
      }
      amax_m = finite_or_nan(lanes_max(am), bad_m);
      amax_v = finite_or_nan(lanes_max(av), bad_v);
    } else {
      // float64 parameters: moments are float (they are 8-bit anyway), the
      // update is done in T as plain loops.
      decode_signed_block<I>(mcode, ms[blk], mb, kp);
      decode_unsigned_block<I>(vcode, vs[blk], vb, kp);
      for (std::size_t i = 0; i < kp; ++i) {
        const T gi = c.maximize ? -gp[i] : gp[i];
        const T sv = static_cast<T>(vb[i]);
        const T mi = c.beta1 * static_cast<T>(mb[i]) + c.one_minus_beta1 * gi;
        const T svi = std::sqrt(c.beta2 * (sv * sv) + c.one_minus_beta2 * gi * gi);
        const T denom = svi * c.inv_sqrt_bc2 + c.eps;
        pp[i] = pp[i] * c.decay - c.step_size * (mi / denom);
        mb[i] = static_cast<float>(mi);
        vb[i] = static_cast<float>(svi);
      }
      amax_m = absmax_block<I>(mb, kp);
      amax_v = absmax_block<I>(vb, kp);
    }
    encode_signed_block_fast<I>(mb, mcode, ms + blk, kp, amax_m);
    encode_unsigned_block_fast<I>(vb, vcode, vs + blk, kp, amax_v);
    if (!full) {
      std::copy(mc, mc + k, m + b);
      std::copy(vc, vc + k, v + b);
      std::copy(pb, pb + k, p + b);
    }
  }
}

template <Isa I>
void quantize_signed(const float* x, std::int8_t* codes, float* scales, std::size_t n) {
  alignas(64) float xb[kQuantBlock];
  alignas(64) std::int8_t cb[kQuantBlock];
  for (std::size_t b = 0; b < n; b += kQuantBlock) {
    const std::size_t k = std::min(kQuantBlock, n - b);
    std::fill(xb, xb + kQuantBlock, 0.0f);
    std::copy(x + b, x + b + k, xb);
    encode_signed_block<I>(xb, cb, scales + b / kQuantBlock, kQuantBlock, absmax_block<I>(xb, kQuantBlock));
    std::copy(cb, cb + k, codes + b);
  }
}
template <Isa I>
void quantize_unsigned(const float* x, std::uint8_t* codes, float* scales, std::size_t n) {
  alignas(64) float xb[kQuantBlock];
  alignas(64) std::uint8_t cb[kQuantBlock];
  for (std::size_t b = 0; b < n; b += kQuantBlock) {
    const std::size_t k = std::min(kQuantBlock, n - b);
    std::fill(xb, xb + kQuantBlock, 0.0f);
    std::copy(x + b, x + b + k, xb);
    encode_unsigned_block<I>(xb, cb, scales + b / kQuantBlock, kQuantBlock, absmax_block<I>(xb, kQuantBlock));
    std::copy(cb, cb + k, codes + b);
  }
}
template <Isa I>
void dequantize_signed(const std::int8_t* codes, const float* scales, float* x, std::size_t n) {
  alignas(64) float xb[kQuantBlock];
  alignas(64) std::int8_t cb[kQuantBlock] = {};
  for (std::size_t b = 0; b < n; b += kQuantBlock) {
    const std::size_t k = std::min(kQuantBlock, n - b);
    std::copy(codes + b, codes + b + k, cb);
    decode_signed_block<I>(cb, scales[b / kQuantBlock], xb, kQuantBlock);
    std::copy(xb, xb + k, x + b);
  }
}
template <Isa I>
void dequantize_unsigned(const std::uint8_t* codes, const float* scales, float* x, std::size_t n) {
  alignas(64) float xb[kQuantBlock];
  alignas(64) std::uint8_t cb[kQuantBlock] = {};
  for (std::size_t b = 0; b < n; b += kQuantBlock) {
    const std::size_t k = std::min(kQuantBlock, n - b);
    std::copy(codes + b, codes + b + k, cb);
    decode_unsigned_block<I>(cb, scales[b / kQuantBlock], xb, kQuantBlock);
    std::copy(xb, xb + k, x + b);
  }
}

// ------------------------------------------------------- clip / accumulate
template <Isa I, class T>
double sum_abs(const T* x, std::size_t n) {
  using V = Vec<T, I>;
  V s0 = V::zero(), s1 = V::zero();
  std::size_t i = 0;
  for (; i + 2 * V::width <= n; i += 2 * V::width) {
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
