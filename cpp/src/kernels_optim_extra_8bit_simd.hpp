// AdamW8bit and its 8-bit moment codec, written once against simd.hpp;
// included by kernels_optim_extra_simd.hpp (same per-ISA units, same
// instantiation list) and kept apart because it is the one part of the extra
// optimizers that needs raw intrinsics.
//  - AdamW8bit works per block of 256: one pass decodes the codes, updates
//    and keeps the block's new absmax in registers (moments to an L1 buffer),
//    a second short pass encodes, so memory is streamed once.
//  - The codec's int8 <-> float conversions are simd::load_codes /
//    store_codes; only sqrt_approx is raw AVX-512 here, in an anonymous
//    namespace so the per-ISA copies never meet at link time. The codec uses only
//    multiplies, one square root and round-to-nearest-even conversions (no
//    multiply-add to contract), so their codes equal the scalar oracle's bit
//    for bit. Per element the step takes 3 square roots (update, m code,
//    sqrt(v) code) and 1 division; on AVX-512 the two encoders' roots come
//    from the 14-bit rsqrt estimate (encode_block<I, true>).
//  - Tails: a partial block runs on a zero-padded copy (multiple of width).
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
// Codes move with simd::load_codes / store_codes; only the root differs.
#if defined(__AVX2__) && !defined(__AVX512F__)
// The exact root: with 256-bit vectors it is as fast here as an rsqrt
// estimate plus the Newton step 8 bits would need (measured).
inline F8 sqrt_approx(F8 y) { return sqrt(y); }
#endif

#if defined(__AVX512F__)
// sqrt(y) for y >= 0 from the 14-bit rsqrt estimate: a code needs 8 bits
// (127*sqrt(y) is off by < 0.008). Floored like the AVX2 version.
inline F16 sqrt_approx(F16 y) {
  return {_mm512_mul_ps(y.v, _mm512_rsqrt14_ps(_mm512_max_ps(y.v, _mm512_set1_ps(1e-30f))))};
}
#endif

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

// Codes of one padded block of n_padded floats with absmax a (the codec of
// optim_extra.hpp): C = int8 is the signed code 127*sqrt(|x|/a)*sign(x), C =
// uint8 the unsigned 255*sqrt(x/a). Fast (the optimizer's encoders) takes
// sqrt_approx: the square root is the bottleneck of the step (sqrtps
// has a fraction of the multiplier's throughput), and a code may then differ
// by one from the exact encoder's where 127*sqrt(y) lies within 0.01 of a
// rounding boundary; the codec functions (quantize_moment) keep the exact,
// ISA-independent codes.
template <Isa I, bool Fast, class C>
void encode_block(const float* x, C* c, float* scale, std::size_t n_padded, float a) {
  using V = Vec<float, I>;
  constexpr bool kSigned = std::is_signed_v<C>;
  *scale = a;
  if (!(a >= kMinScale)) {
    std::fill(c, c + n_padded, C(0));
    return;
  }
  const V inv = V::set1(1.0f / a), k = V::set1(kSigned ? 127.0f : 255.0f), zero = V::zero();
  for (std::size_t i = 0; i < n_padded; i += V::width) {
    const V xi = V::load(x + i);
    const V y = abs(xi) * inv;
    const V z = (Fast ? sqrt_approx(y) : sqrt(y)) * k;
    store_codes(c + i, kSigned ? select(lt(xi, zero), zero - z, z) : z);
  }
}

// a*(c/127)*|c/127| (signed) or a*(c/255)^2 (unsigned: c/255 >= 0, so the
// same expression gives the same bits).
template <Isa I, class C>
void decode_block(const C* c, float scale, float* x, std::size_t n_padded) {
  using V = Vec<float, I>;
  const V inv = V::set1(std::is_signed_v<C> ? 1.0f / 127.0f : 1.0f / 255.0f), s = V::set1(scale);
  for (std::size_t i = 0; i < n_padded; i += V::width) {
    const V t = load_codes<I>(c + i) * inv;
    ((t * abs(t)) * s).store(x + i);
  }
}

// The exact codec over n elements (blocks of kQuantBlock; a partial last
// block through zero-padded buffers).
template <Isa I, class C>
void quantize_blocks(const float* x, C* codes, float* scales, std::size_t n) {
  alignas(64) float xb[kQuantBlock];
  alignas(64) C cb[kQuantBlock];
  for (std::size_t b = 0; b < n; b += kQuantBlock) {
    const std::size_t k = std::min(kQuantBlock, n - b);
    std::fill(xb, xb + kQuantBlock, 0.0f);
    std::copy(x + b, x + b + k, xb);
    encode_block<I, false>(xb, cb, scales + b / kQuantBlock, kQuantBlock, absmax_block<I>(xb, kQuantBlock));
    std::copy(cb, cb + k, codes + b);
  }
}
template <Isa I, class C>
void dequantize_blocks(const C* codes, const float* scales, float* x, std::size_t n) {
  alignas(64) float xb[kQuantBlock];
  alignas(64) C cb[kQuantBlock] = {};
  for (std::size_t b = 0; b < n; b += kQuantBlock) {
    const std::size_t k = std::min(kQuantBlock, n - b);
    std::copy(codes + b, codes + b + k, cb);
    decode_block<I>(cb, scales[b / kQuantBlock], xb, kQuantBlock);
    std::copy(xb, xb + k, x + b);
  }
}

}  // namespace

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
    // The block two ahead, line by line: the update's square root and
    // division delay the loads as in the elementwise steps (Streams,
    // kernels_optim_simd.hpp).
    for (std::size_t line = 0; line < kQuantBlock * sizeof(T); line += 64) {
      simd::prefetch(p + b, 2 * kQuantBlock * sizeof(T) + line);
      simd::prefetch(g + b, 2 * kQuantBlock * sizeof(T) + line);
      if (line < kQuantBlock) {
        simd::prefetch(m + b, 2 * kQuantBlock + line);
        simd::prefetch(v + b, 2 * kQuantBlock + line);
      }
    }
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
        const V tm = load_codes<I>(mcode + i) * inv_m;
        const V tv = load_codes<I>(vcode + i) * inv_v;
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
      decode_block<I>(mcode, ms[blk], mb, kp);
      decode_block<I>(vcode, vs[blk], vb, kp);
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
    encode_block<I, true>(mb, mcode, ms + blk, kp, amax_m);
    encode_block<I, true>(vb, vcode, vs + blk, kp, amax_v);
    if (!full) {
      std::copy(mc, mc + k, m + b);
      std::copy(vc, vc + k, v + b);
      std::copy(pb, pb + k, p + b);
    }
  }
}

template <Isa I>
void quantize_signed(const float* x, std::int8_t* codes, float* scales, std::size_t n) {
  quantize_blocks<I>(x, codes, scales, n);
}
template <Isa I>
void quantize_unsigned(const float* x, std::uint8_t* codes, float* scales, std::size_t n) {
  quantize_blocks<I>(x, codes, scales, n);
}
template <Isa I>
void dequantize_signed(const std::int8_t* codes, const float* scales, float* x, std::size_t n) {
  dequantize_blocks<I>(codes, scales, x, n);
}
template <Isa I>
void dequantize_unsigned(const std::uint8_t* codes, const float* scales, float* x, std::size_t n) {
  dequantize_blocks<I>(codes, scales, x, n);
}

}  // namespace slimgrad::kernels
