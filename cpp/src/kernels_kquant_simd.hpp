// K-quant kernels written once for avx2 and avx512, instantiated by
// kernels_kquant_avx2.cpp / kernels_kquant_avx512.cpp. Bytes equal the
// scalar reference (kernels_kquant_scalar.cpp), which equals llama.cpp:
//  - lanes are sub-blocks, not elements: llama.cpp's scale searches
//    (make_qkx2/qkx3_quants, make_qx_quants) accumulate float sums in element
//    order, so each lane runs the reference loop for its own sub-block
//    (8 or 16 sub-blocks at once) and every sum is added in the same order;
//    sub-blocks are transposed into element-major scratch first;
//  - the reference's branches become per-lane selects; a lane whose
//    reference returned early computes throw-away values (NaN/inf allowed,
//    FP exceptions are masked) and is overwritten at the end;
//  - nearest_int is the same 1.5 * 2^23 bit trick on integer lanes; compares
//    are ordered (a NaN never compares greater), `x ? a : b` on a float is
//    unordered-not-equal, as in C;
//  - the including file turns FP contraction off: every a*b+c stays a
//    multiply then an add, like the reference;
//  - each super-block is finished (scale quantization, final codes, bit
//    packing) by the scalar functions of kquant_ref.hpp; Q3_K (a sequential
//    coordinate descent per element) runs the reference as a whole;
//  - dequantization of Q4_K/Q5_K/Q6_K: W codes widened to int32 lanes, then
//    the reference's float `d * sc` and `* q - m` (Q2_K/Q3_K: reference).
// Tails: a call's last pair of super-blocks is padded with zeros (degenerate
// lanes) whose results are dropped. Helpers have internal linkage (per-file
// ISA flags + ODR).
#pragma once

#include <immintrin.h>

#include <cstring>

#include "kquant_ref.hpp"
#include "slimgrad/kquant.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
namespace {

template <Isa I>
struct KOps;

template <>
struct KOps<Isa::avx2> {
  using V = __m256;
  using M = __m256;
  static constexpr int W = 8;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V a) { _mm256_storeu_ps(p, a); }
  static V set1(float a) { return _mm256_set1_ps(a); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V sqrt(V a) { return _mm256_sqrt_ps(a); }
  static V abs(V a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static V neg(V a) { return _mm256_xor_ps(_mm256_set1_ps(-0.0f), a); }
  static M gt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M lt(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_LT_OQ); }
  static M eq(V a, V b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static M nonzero(V a) { return _mm256_cmp_ps(a, _mm256_setzero_ps(), _CMP_NEQ_UQ); }
  static V select(M m, V a, V b) { return _mm256_blendv_ps(b, a, m); }
  static M mand(M a, M b) { return _mm256_and_ps(a, b); }
  static bool any(M m) { return _mm256_movemask_ps(m) != 0; }
  // max(lo, min(hi, nearest_int(v))) as float.
  static V nearest_clamp(V v, int lo, int hi) {
    const __m256i b = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12582912.f)));
    __m256i i = _mm256_sub_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x00400000));
    i = _mm256_max_epi32(_mm256_set1_epi32(lo), _mm256_min_epi32(_mm256_set1_epi32(hi), i));
    return _mm256_cvtepi32_ps(i);
  }
  // Dequantization: W bytes -> int32 lanes, shifts and masks, -> float.
  using VI = __m256i;
  static VI load_u8(const std::uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  }
  static VI bits(VI v, int shift, int mask) {
    return _mm256_and_si256(_mm256_srli_epi32(v, shift), _mm256_set1_epi32(mask));
  }
  static VI or_shl(VI a, VI b, int shift) { return _mm256_or_si256(a, _mm256_slli_epi32(b, shift)); }
  static V to_float(VI v, int offset) { return _mm256_cvtepi32_ps(_mm256_sub_epi32(v, _mm256_set1_epi32(offset))); }
};

#if defined(__AVX512F__)
template <>
struct KOps<Isa::avx512> {
  using V = __m512;
  using M = __mmask16;
  static constexpr int W = 16;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V a) { _mm512_storeu_ps(p, a); }
  static V set1(float a) { return _mm512_set1_ps(a); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V sqrt(V a) { return _mm512_sqrt_ps(a); }
  static V abs(V a) { return _mm512_abs_ps(a); }
  static V neg(V a) {
    return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(a), _mm512_set1_epi32(INT32_MIN)));
  }
  static M gt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M lt(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_LT_OQ); }
  static M eq(V a, V b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static M nonzero(V a) { return _mm512_cmp_ps_mask(a, _mm512_setzero_ps(), _CMP_NEQ_UQ); }
  static V select(M m, V a, V b) { return _mm512_mask_blend_ps(m, b, a); }
  static M mand(M a, M b) { return static_cast<M>(a & b); }
  static bool any(M m) { return m != 0; }
  static V nearest_clamp(V v, int lo, int hi) {
    const __m512i b = _mm512_castps_si512(_mm512_add_ps(v, _mm512_set1_ps(12582912.f)));
    __m512i i = _mm512_sub_epi32(_mm512_and_si512(b, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x00400000));
    i = _mm512_max_epi32(_mm512_set1_epi32(lo), _mm512_min_epi32(_mm512_set1_epi32(hi), i));
    return _mm512_cvtepi32_ps(i);
  }
  using VI = __m512i;
  static VI load_u8(const std::uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static VI bits(VI v, int shift, int mask) {
    return _mm512_and_si512(_mm512_srli_epi32(v, static_cast<unsigned>(shift)), _mm512_set1_epi32(mask));
  }
  static VI or_shl(VI a, VI b, int shift) {
    return _mm512_or_si512(a, _mm512_slli_epi32(b, static_cast<unsigned>(shift)));
  }
  static V to_float(VI v, int offset) { return _mm512_cvtepi32_ps(_mm512_sub_epi32(v, _mm512_set1_epi32(offset))); }
};
#endif

// make_qkx2_quants / make_qkx3_quants (with weights) for W sub-blocks of N
// values: x[i] and w[i] hold element i of every lane. Outputs codes L[i],
// the scale and the negated min per lane.
template <Isa I, int N>
void qkx_lanes(const typename KOps<I>::V* x, const typename KOps<I>::V* w, int nmax, float rmin, float rdelta,
               int nstep, bool use_mad, typename KOps<I>::V* L, typename KOps<I>::V& scale_out,
               typename KOps<I>::V& min_out) {
  using K = KOps<I>;
  using V = typename K::V;
  using M = typename K::M;
  const V zero = K::set1(0.0f);
  V la[N];
  V mn = x[0], mx = x[0], sum_w = w[0], sum_x = K::mul(w[0], x[0]);
  for (int i = 1; i < N; ++i) {
    mn = K::select(K::lt(x[i], mn), x[i], mn);
    mx = K::select(K::gt(x[i], mx), x[i], mx);
    sum_w = K::add(sum_w, w[i]);
    sum_x = K::add(sum_x, K::mul(w[i], x[i]));
  }
  mn = K::select(K::gt(mn, zero), zero, mn);
  const M degenerate = K::eq(mx, mn);
  const V mn0 = mn;
  V iscale = K::div(K::set1(static_cast<float>(nmax)), K::sub(mx, mn));
  V scale = K::div(K::set1(1.0f), iscale);
  V best = zero;
  for (int i = 0; i < N; ++i) {
    L[i] = K::nearest_clamp(K::mul(iscale, K::sub(x[i], mn)), 0, nmax);
    V diff = K::sub(K::add(K::mul(scale, L[i]), mn), x[i]);
    diff = use_mad ? K::abs(diff) : K::mul(diff, diff);
    best = K::add(best, K::mul(w[i], diff));
  }
  for (int is = 0; is <= nstep; ++is) {
    // The reference updates min inside this loop, so x - min and the range
    // are recomputed with each lane's current min.
    iscale = K::div(K::set1(rmin + rdelta * is + nmax), K::sub(mx, mn));
    V sum_l = zero, sum_l2 = zero, sum_xl = zero;
    for (int i = 0; i < N; ++i) {
      la[i] = K::nearest_clamp(K::mul(iscale, K::sub(x[i], mn)), 0, nmax);
      const V wl = K::mul(w[i], la[i]);
      sum_l = K::add(sum_l, wl);
      sum_l2 = K::add(sum_l2, K::mul(wl, la[i]));
      sum_xl = K::add(sum_xl, K::mul(wl, x[i]));
    }
    const V D = K::sub(K::mul(sum_w, sum_l2), K::mul(sum_l, sum_l));
    const M ok = K::gt(D, zero);
    if (!K::any(ok)) continue;
    V this_scale = K::div(K::sub(K::mul(sum_w, sum_xl), K::mul(sum_x, sum_l)), D);
    V this_min = K::div(K::sub(K::mul(sum_l2, sum_x), K::mul(sum_l, sum_xl)), D);
    const M pos = K::gt(this_min, zero);
    this_min = K::select(pos, zero, this_min);
    this_scale = K::select(pos, K::div(sum_xl, sum_l2), this_scale);
    V cur = zero;
    for (int i = 0; i < N; ++i) {
      V diff = K::sub(K::add(K::mul(this_scale, la[i]), this_min), x[i]);
      diff = use_mad ? K::abs(diff) : K::mul(diff, diff);
      cur = K::add(cur, K::mul(w[i], diff));
    }
    const M better = K::mand(ok, K::lt(cur, best));
    if (!K::any(better)) continue;
    for (int i = 0; i < N; ++i) L[i] = K::select(better, la[i], L[i]);
    best = K::select(better, cur, best);
    scale = K::select(better, this_scale, scale);
    mn = K::select(better, this_min, mn);
  }
  for (int i = 0; i < N; ++i) L[i] = K::select(degenerate, zero, L[i]);
  scale_out = K::select(degenerate, zero, scale);
  min_out = K::neg(K::select(degenerate, mn0, mn));
}

// make_qx_quants with rmse_type 1 for W sub-blocks of 16 (Q6_K: nmax 32):
// weights w (importance) or x^2 when w is null. L gets the stored codes
// (l + nmax), scale_out the scale.
template <Isa I>
void qx_lanes(const typename KOps<I>::V* x, const typename KOps<I>::V* w, int nmax, typename KOps<I>::V* L,
              typename KOps<I>::V& scale_out) {
  using K = KOps<I>;
  using V = typename K::V;
  constexpr int N = 16;
  const V zero = K::set1(0.0f);
  V ww[N], lc[N];
  V amax = zero, max = zero;
  for (int i = 0; i < N; ++i) {
    const V ax = K::abs(x[i]);
    const auto g = K::gt(ax, amax);
    amax = K::select(g, ax, amax);
    max = K::select(g, x[i], max);
    ww[i] = w ? w[i] : K::mul(x[i], x[i]);
  }
  const auto degenerate = K::lt(amax, K::set1(1e-15f));
  V iscale = K::div(K::set1(static_cast<float>(-nmax)), max);
  V sumlx = zero, suml2 = zero;
  for (int i = 0; i < N; ++i) {
    L[i] = K::nearest_clamp(K::mul(iscale, x[i]), -nmax, nmax - 1);
    sumlx = K::add(sumlx, K::mul(K::mul(ww[i], x[i]), L[i]));
    suml2 = K::add(suml2, K::mul(K::mul(ww[i], L[i]), L[i]));
  }
  V scale = K::select(K::nonzero(suml2), K::div(sumlx, suml2), zero);
  V best = K::mul(scale, sumlx);
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = K::div(K::set1(-(nmax + 0.1f * is)), max);
    sumlx = suml2 = zero;
    for (int i = 0; i < N; ++i) {
      lc[i] = K::nearest_clamp(K::mul(iscale, x[i]), -nmax, nmax - 1);
      sumlx = K::add(sumlx, K::mul(K::mul(ww[i], x[i]), lc[i]));
      suml2 = K::add(suml2, K::mul(K::mul(ww[i], lc[i]), lc[i]));
    }
    const auto upd = K::mand(K::gt(suml2, zero), K::gt(K::mul(sumlx, sumlx), K::mul(best, suml2)));
    if (!K::any(upd)) continue;
    for (int i = 0; i < N; ++i) L[i] = K::select(upd, lc[i], L[i]);
    scale = K::select(upd, K::div(sumlx, suml2), scale);
    best = K::select(upd, K::mul(scale, sumlx), best);
  }
  const V off = K::set1(static_cast<float>(nmax));
  for (int i = 0; i < N; ++i) L[i] = K::select(degenerate, zero, K::add(L[i], off));
  scale_out = K::select(degenerate, zero, scale);
}

// Element-major copy of W sub-blocks of n values: t[i * W + l] = x[l * n + i].
template <int W>
void transpose_in(const float* x, int n, float* t) {
  for (int l = 0; l < W; ++l)
    for (int i = 0; i < n; ++i) t[i * W + l] = x[l * n + i];
}

// Q2_K / Q4_K / Q5_K: two super-blocks at a time (padded with zeros).
template <Isa I>
void qkx_superblocks(kquant::KType t, const float* x, std::size_t n_blocks, const float* qw, std::uint8_t* out) {
  using K = KOps<I>;
  using V = typename K::V;
  constexpr int W = K::W, QK = static_cast<int>(kquant::kQK);
  const bool q2 = t == kquant::KType::q2_k, q4 = t == kquant::KType::q4_k;
  const int n = q2 ? 16 : 32, nmax = q2 ? 3 : q4 ? 15 : 31;
  const std::size_t ts = kquant::type_size(t);
  alignas(64) float xb[2 * QK], wb[2 * QK], xt[32 * W], wt[32 * W], lt[32 * W];
  float scales[32], mins[32], sw[32], sigma2[2] = {0, 0};
  std::uint8_t L[2 * QK];
  for (std::size_t b = 0; b < n_blocks; b += 2) {
    const int nb = n_blocks - b >= 2 ? 2 : 1;
    std::memset(xb, 0, sizeof(xb));
    std::memset(wb, 0, sizeof(wb));
    std::memcpy(xb, x + QK * b, sizeof(float) * QK * nb);
    if (qw) std::memcpy(wb, qw + QK * b, sizeof(float) * QK * nb);
    for (int k = 0; k < nb && qw; ++k) {  // sigma2 over the whole super-block, in order
      float sum_x2 = 0;
      for (int l = 0; l < QK; ++l) sum_x2 += xb[QK * k + l] * xb[QK * k + l];
      sigma2[k] = q2 ? sum_x2 / QK : 2 * sum_x2 / QK;
    }
    const int n_sub = 2 * QK / n;
    for (int s0 = 0; s0 < n_sub; s0 += W) {
      V xv[32], wv[32], lv[32], sc, mi;
      transpose_in<W>(xb + s0 * n, n, xt);
      if (qw) transpose_in<W>(wb + s0 * n, n, wt);
      for (int i = 0; i < n; ++i) xv[i] = K::load(xt + i * W);
      if (qw) {
        float sg[W];
        for (int l = 0; l < W; ++l) sg[l] = sigma2[(s0 + l) * n / QK];
        const V sgv = K::load(sg);
        V sumw = K::set1(0.0f);
        for (int i = 0; i < n; ++i) {
          wv[i] = K::mul(K::load(wt + i * W), K::sqrt(K::add(sgv, K::mul(xv[i], xv[i]))));
          sumw = K::add(sumw, wv[i]);
        }
        K::store(sw + s0, sumw);
        if (n == 32) qkx_lanes<I, 32>(xv, wv, nmax, -0.9f, 0.05f, 36, false, lv, sc, mi);
        else qkx_lanes<I, 16>(xv, wv, nmax, -0.9f, 0.05f, 36, false, lv, sc, mi);
      } else if (q2) {
        for (int i = 0; i < n; ++i) wv[i] = K::abs(xv[i]);
        qkx_lanes<I, 16>(xv, wv, 3, -0.5f, 0.1f, 15, true, lv, sc, mi);
      } else {
        V sum_x2 = K::set1(0.0f);
        for (int i = 0; i < 32; ++i) sum_x2 = K::add(sum_x2, K::mul(xv[i], xv[i]));
        const V av_x = K::sqrt(K::div(sum_x2, K::set1(32.0f)));
        for (int i = 0; i < 32; ++i) wv[i] = K::add(av_x, K::abs(xv[i]));
        qkx_lanes<I, 32>(xv, wv, nmax, q4 ? -1.f : -0.5f, 0.1f, q4 ? 20 : 15, false, lv, sc, mi);
      }
      K::store(scales + s0, sc);
      K::store(mins + s0, mi);
      for (int i = 0; i < n; ++i) K::store(lt + i * W, lv[i]);
      for (int l = 0; l < W; ++l)
        for (int i = 0; i < n; ++i) L[(s0 + l) * n + i] = static_cast<std::uint8_t>(lt[i * W + l]);
    }
    for (int k = 0; k < nb; ++k) {
      const int so = k * QK / n;
      void* y = out + ts * (b + k);
      if (q2)
        kq::q2k_finish(xb + QK * k, scales + so, mins + so, qw ? sw + so : nullptr, L + QK * k,
                       static_cast<kquant::BlockQ2K*>(y));
      else
        kq::q45k_finish(!q4, xb + QK * k, scales + so, mins + so, qw ? sw + so : nullptr, L + QK * k, y);
    }
  }
}

// Q6_K: one super-block (16 sub-blocks of 16) per 16 lanes.
template <Isa I>
void q6k_superblocks(const float* x, std::size_t n_blocks, const float* qw, std::uint8_t* out) {
  using K = KOps<I>;
  using V = typename K::V;
  constexpr int W = K::W, QK = static_cast<int>(kquant::kQK);
  alignas(64) float xt[16 * W], wt[16 * W], lt[16 * W];
  float scales[16];
  std::int8_t L[QK];
  for (std::size_t b = 0; b < n_blocks; ++b) {
    const float* xb = x + QK * b;
    for (int s0 = 0; s0 < 16; s0 += W) {
      V xv[16], wv[16], lv[16], sc;
      transpose_in<W>(xb + 16 * s0, 16, xt);
      for (int i = 0; i < 16; ++i) xv[i] = K::load(xt + i * W);
      if (qw) {
        transpose_in<W>(qw + QK * b + 16 * s0, 16, wt);
        for (int i = 0; i < 16; ++i) wv[i] = K::load(wt + i * W);
      }
      qx_lanes<I>(xv, qw ? wv : nullptr, 32, lv, sc);
      K::store(scales + s0, sc);
      for (int i = 0; i < 16; ++i) K::store(lt + i * W, lv[i]);
      for (int l = 0; l < W; ++l)
        for (int i = 0; i < 16; ++i) L[(s0 + l) * 16 + i] = static_cast<std::int8_t>(lt[i * W + l]);
    }
    kq::q6k_finish(xb, scales, L, reinterpret_cast<kquant::BlockQ6K*>(out + sizeof(kquant::BlockQ6K) * b));
  }
}

}  // namespace

template <Isa I>
void kquant_quantize(int type, const float* x, std::size_t n_blocks, const float* qw, void* out) {
  const auto t = static_cast<kquant::KType>(type);
  auto* o = static_cast<std::uint8_t*>(out);
  if (t == kquant::KType::q6_k) q6k_superblocks<I>(x, n_blocks, qw, o);
  else if (t == kquant::KType::q3_k) kq::quantize_ref(type, x, n_blocks, qw, out);
  else qkx_superblocks<I>(t, x, n_blocks, qw, o);
}

// Q4_K / Q5_K / Q6_K dequantization, W values at a time: the reference's
// `d * sc` (float) then `* q - m` (multiply, then subtract; Q6_K: `* q`).
template <Isa I>
void kquant_dequantize(int type, const void* in, std::size_t n_blocks, float* out) {
  using K = KOps<I>;
  using V = typename K::V;
  constexpr int W = K::W, QK = static_cast<int>(kquant::kQK);
  const auto t = static_cast<kquant::KType>(type);
  if (t == kquant::KType::q2_k || t == kquant::KType::q3_k) return kq::dequantize_ref(type, in, n_blocks, out);
  const auto* base = static_cast<const std::uint8_t*>(in);
  const std::size_t ts = kquant::type_size(t);
  for (std::size_t i = 0; i < n_blocks; ++i) {
    const std::uint8_t* b = base + ts * i;
    float* y = out + static_cast<std::size_t>(QK) * i;
    if (t == kquant::KType::q6_k) {
      const auto* blk = reinterpret_cast<const kquant::BlockQ6K*>(b);
      const float d = kq::fp16_to_fp32(blk->d);
      for (int k = 0; k < QK; k += W) {  // value k: half h, quarter s, lane l
        const int h = k / 128, s = (k % 128) / 32, l = k % 32;
        const auto lo = K::bits(K::load_u8(blk->ql + 64 * h + 32 * (s & 1) + l), 4 * (s >> 1), 0xF);
        const auto hi = K::bits(K::load_u8(blk->qh + 32 * h + l), 2 * s, 3);
        const V dl = K::set1(d * blk->scales[8 * h + 2 * s + l / 16]);
        K::store(y + k, K::mul(dl, K::to_float(K::or_shl(lo, hi, 4), 32)));
      }
      continue;
    }
    const bool five = t == kquant::KType::q5_k;
    const auto* hdr = reinterpret_cast<const kquant::BlockQ4K*>(b);  // d, dmin, scales: same prefix in Q5_K
    const std::uint8_t* qs = five ? reinterpret_cast<const kquant::BlockQ5K*>(b)->qs : hdr->qs;
    const std::uint8_t* qh = reinterpret_cast<const kquant::BlockQ5K*>(b)->qh;
    const float d = kq::fp16_to_fp32(hdr->d), dmin = kq::fp16_to_fp32(hdr->dmin);
    for (int j = 0; j < 8; ++j) {
      std::uint8_t sc, m;
      kq::get_scale_min_k4(j, hdr->scales, &sc, &m);
      const V dl = K::set1(d * sc), ml = K::set1(dmin * m);
      for (int l = 0; l < 32; l += W) {
        auto q = K::bits(K::load_u8(qs + 32 * (j / 2) + l), 4 * (j % 2), 0xF);
        if (five) q = K::or_shl(q, K::bits(K::load_u8(qh + l), j, 1), 4);
        K::store(y + 32 * j + l, K::sub(K::mul(dl, K::to_float(q, 0)), ml));
      }
    }
  }
}

}  // namespace slimgrad::kernels

// The generated per-ISA units (CMakeLists.txt, SLIMGRAD_KERNEL_AREAS: "kquant
// exact", so no FP contraction: the bytes must equal llama.cpp's reference,
// which multiplies then adds) define SLIMGRAD_UNIT_ISA and instantiate here.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void kquant_quantize<SLIMGRAD_UNIT_ISA>(int, const float*, std::size_t, const float*, void*);
template void kquant_dequantize<SLIMGRAD_UNIT_ISA>(int, const void*, std::size_t, float*);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
