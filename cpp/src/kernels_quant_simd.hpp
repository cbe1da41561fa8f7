// Quantization kernels written once for avx2 and avx512, instantiated by the
// per-ISA units the build generates (CMakeLists.txt). They compute exactly what
// kernels_quant_scalar.cpp computes (tests compare bytes):
//  - the area is "exact" in CMakeLists.txt (-ffp-contract=off on its units):
//    `x * inv + zp` must stay a multiply then an add, like the
//    oracle, torch and the gguf package; explicit fma intrinsics are
//    unaffected;
//  - rounding: vroundps/vrndscaleps to nearest even; half away from zero as
//    trunc(t) + sign(t) where |t - trunc(t)| >= 0.5 (exact, unlike
//    floor(t + 0.5)); stochastic: floor(t + u), u from the same 32-bit hash;
//  - int32 -> byte: truncation to the low byte (vpmovdb on avx512, mask +
//    unsigned packs on avx2), so signed and unsigned codes share one path;
//  - quant_groups: min/max, parameters (quant::make_param, plain IEEE double
//    arithmetic) and codes of consecutive groups in one call;
//  - GGUF: 16 blocks at a time (statistics, then d and 1/d as vector
//    divisions, then codes), degenerate blocks through the oracle;
//  - tails go through a padded stack copy and the same vector arithmetic.
// Helpers have internal linkage and std:: algorithms are avoided (per-file
// ISA flags + ODR). Integer-only work (pack/unpack) uses AVX2 intrinsics in
// both files.
#pragma once

#include <immintrin.h>

#include <cstring>

#include "slimgrad/quant.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

// Per-ISA integer helpers on float-width lanes.
template <Isa I>
struct QOps;

template <>
struct QOps<Isa::avx2> {
  using F = Vec<float, Isa::avx2>;
  using VI = __m256i;
  static F round_even(F t) { return {_mm256_round_ps(t.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  static F trunc(F t) { return {_mm256_round_ps(t.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)}; }
  static F floor(F t) { return {_mm256_round_ps(t.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)}; }
  static F round_away(F t) {
    const __m256 tr = _mm256_round_ps(t.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 sign = _mm256_and_ps(t.v, _mm256_set1_ps(-0.0f));
    const __m256 frac = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), _mm256_sub_ps(t.v, tr));
    const __m256 big = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    return {_mm256_add_ps(tr, _mm256_and_ps(big, _mm256_or_ps(sign, _mm256_set1_ps(1.0f))))};
  }
  static VI iota() { return _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7); }
  static VI set1(std::uint32_t v) { return _mm256_set1_epi32(static_cast<int>(v)); }
  static VI add(VI a, VI b) { return _mm256_add_epi32(a, b); }
  static VI mix(VI x) {
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846ca68bu)));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  }
  static F uniform(VI lo, quant::StreamKey k) {
    const VI h = mix(_mm256_xor_si256(mix(add(lo, set1(k.k1))), set1(k.k2)));
    return {_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(h, 8)), _mm256_set1_ps(5.9604644775390625e-8f))};
  }
  // Low bytes of the (integral) lanes of t, to 8 bytes at p.
  static void store_bytes(std::uint8_t* p, F t) {
    const __m256i v = _mm256_and_si256(_mm256_cvttps_epi32(t.v), _mm256_set1_epi32(0xFF));
    const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_packus_epi16(w, w));
  }
  static F load_codes(const std::uint8_t* p, bool is_signed) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return {_mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b))};
  }
  static float hmin(F a) {
    __m128 s = _mm_min_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_min_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_min_ss(s, _mm_movehdup_ps(s)));
  }
  static float hmax(F a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
  // GGUF blocks: 32 values = 4 vectors.
  static unsigned eq_mask(F a, float s) {
    return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a.v, _mm256_set1_ps(s), _CMP_EQ_OQ)));
  }
  // 4 vectors of small integral floats (|v| <= 127) -> 32 bytes, in order.
  static void block_bytes(const F* c, std::uint8_t* out) {
    const __m256i a = _mm256_packs_epi32(_mm256_cvttps_epi32(c[0].v), _mm256_cvttps_epi32(c[1].v));
    const __m256i b = _mm256_packs_epi32(_mm256_cvttps_epi32(c[2].v), _mm256_cvttps_epi32(c[3].v));
    const __m256i p = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(a, b), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), p);
  }
  // Element k*W + lane of 32 codes (uint8) plus bit (k*W + lane) of qh << 4.
  static F codes5(const std::uint8_t* q, std::uint32_t qh, int k, bool five) {
    __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * k)));
    if (five) {
      const __m256i sh = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(8 * k));
      const __m256i bit = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(qh)), sh),
                                           _mm256_set1_epi32(1));
      c = _mm256_or_si256(c, _mm256_slli_epi32(bit, 4));
    }
    return {_mm256_cvtepi32_ps(c)};
  }
  static F codes8(const std::uint8_t* q, int k) {
    return {_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + 8 * k))))};
  }
};

#if defined(__AVX512F__)
template <>
struct QOps<Isa::avx512> {
  using F = Vec<float, Isa::avx512>;
  using VI = __m512i;
  static F round_even(F t) { return {_mm512_roundscale_ps(t.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)}; }
  static F trunc(F t) { return {_mm512_roundscale_ps(t.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC)}; }
  static F floor(F t) { return {_mm512_roundscale_ps(t.v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC)}; }
  static F round_away(F t) {
    const __m512 tr = _mm512_roundscale_ps(t.v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 frac = _mm512_abs_ps(_mm512_sub_ps(t.v, tr));
    const __mmask16 big = _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512i one = _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(t.v), _mm512_set1_epi32(INT32_MIN)),
                                        _mm512_castps_si512(_mm512_set1_ps(1.0f)));
    return {_mm512_mask_add_ps(tr, big, tr, _mm512_castsi512_ps(one))};
  }
  static VI iota() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }
  static VI set1(std::uint32_t v) { return _mm512_set1_epi32(static_cast<int>(v)); }
  static VI add(VI a, VI b) { return _mm512_add_epi32(a, b); }
  static VI mix(VI x) {
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0x846ca68bu)));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  }
  static F uniform(VI lo, quant::StreamKey k) {
    const VI h = mix(_mm512_xor_si512(mix(add(lo, set1(k.k1))), set1(k.k2)));
    return {_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(h, 8)), _mm512_set1_ps(5.9604644775390625e-8f))};
  }
  static void store_bytes(std::uint8_t* p, F t) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(t.v)));
  }
  static F load_codes(const std::uint8_t* p, bool is_signed) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return {_mm512_cvtepi32_ps(is_signed ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b))};
  }
  static float hmin(F a) { return _mm512_reduce_min_ps(a.v); }
  static float hmax(F a) { return _mm512_reduce_max_ps(a.v); }
  static unsigned eq_mask(F a, float s) {
    return static_cast<unsigned>(_mm512_cmp_ps_mask(a.v, _mm512_set1_ps(s), _CMP_EQ_OQ));
  }
  static void block_bytes(const F* c, std::uint8_t* out) {  // one 32-byte store: the reload forwards
    const __m128i a = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(c[0].v));
    const __m128i b = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(c[1].v));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm256_set_m128i(b, a));
  }
  static F codes5(const std::uint8_t* q, std::uint32_t qh, int k, bool five) {
    __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * k)));
    if (five) {
      const __m512i sh = _mm512_add_epi32(iota(), _mm512_set1_epi32(16 * k));
      const __m512i bit = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(static_cast<int>(qh)), sh),
                                           _mm512_set1_epi32(1));
      c = _mm512_or_si512(c, _mm512_slli_epi32(bit, 4));
    }
    return {_mm512_cvtepi32_ps(c)};
  }
  static F codes8(const std::uint8_t* q, int k) {
    return {_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16 * k))))};
  }
};
#endif

// One vector of codes from one vector of x; `lo` holds the low 32 bits of
// each lane's flat index (stochastic rounding only).
template <Isa I, int Mode>
inline Vec<float, I> code_vec(Vec<float, I> x, Vec<float, I> scale, Vec<float, I> inv, bool use_div,
                              Vec<float, I> zp, Vec<float, I> qmin, Vec<float, I> qmax,
                              typename QOps<I>::VI lo, quant::StreamKey key) {
  using Q = QOps<I>;
  const Vec<float, I> r = use_div ? x / scale : x * inv;
  Vec<float, I> t = r + zp;
  if constexpr (Mode == 0) t = Q::round_even(t);
  else if constexpr (Mode == 1) t = Q::round_away(t);
  else t = Q::floor(t + Q::uniform(lo, key));
  return min(max(t, qmin), qmax);  // t is never NaN here: no NaN-order question
}

template <Isa I, int Mode>
void codes_impl(const float* x, std::size_t n, float scale, float inv, bool use_div, float zp, float qmin,
                float qmax, std::uint64_t seed, std::uint64_t index, std::uint8_t* codes) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr std::size_t W = V::width;
  const V vs = V::set1(scale), vi = V::set1(inv), vz = V::set1(zp), vlo = V::set1(qmin), vhi = V::set1(qmax);
  std::size_t i = 0;
  while (i < n) {
    // A piece never crosses a multiple of 2^32 in the flat index, so the
    // high half (part of the key) is constant within it.
    const std::uint64_t f = index + i;
    const std::uint64_t to_wrap = (std::uint64_t{1} << 32) - (f & 0xFFFFFFFFu);
    const std::size_t end = (Mode == 2 && to_wrap < n - i) ? i + static_cast<std::size_t>(to_wrap) : n;
    const quant::StreamKey key = Mode == 2 ? quant::stream_key(seed, static_cast<std::uint32_t>(f >> 32))
                                           : quant::StreamKey{0, 0};
    typename Q::VI lo = Q::add(Q::set1(static_cast<std::uint32_t>(f)), Q::iota());
    const typename Q::VI step = Q::set1(static_cast<std::uint32_t>(W));
    for (; i + W <= end; i += W) {
      Q::store_bytes(codes + i, code_vec<I, Mode>(V::load(x + i), vs, vi, use_div, vz, vlo, vhi, lo, key));
      lo = Q::add(lo, step);
    }
    if (i < end) {
      const std::size_t k = end - i;
      float tmp[W] = {};
      std::memcpy(tmp, x + i, k * sizeof(float));
      std::uint8_t out[W];
      Q::store_bytes(out, code_vec<I, Mode>(V::load(tmp), vs, vi, use_div, vz, vlo, vhi, lo, key));
      std::memcpy(codes + i, out, k);
      i = end;
    }
  }
}

// Channels along the last axis: per-lane inv and zero point.
template <Isa I, int Mode>
void codes_cols_impl(const float* x, std::size_t n, const float* inv, const float* zp, float qmin, float qmax,
                     std::uint64_t seed, std::uint64_t index, std::uint8_t* codes) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr std::size_t W = V::width;
  const V vlo = V::set1(qmin), vhi = V::set1(qmax), one = V::set1(1.0f);
  std::size_t i = 0;
  while (i < n) {
    const std::uint64_t f = index + i;
    const std::uint64_t to_wrap = (std::uint64_t{1} << 32) - (f & 0xFFFFFFFFu);
    const std::size_t end = (Mode == 2 && to_wrap < n - i) ? i + static_cast<std::size_t>(to_wrap) : n;
    const quant::StreamKey key = Mode == 2 ? quant::stream_key(seed, static_cast<std::uint32_t>(f >> 32))
                                           : quant::StreamKey{0, 0};
    typename Q::VI lo = Q::add(Q::set1(static_cast<std::uint32_t>(f)), Q::iota());
    const typename Q::VI step = Q::set1(static_cast<std::uint32_t>(W));
    for (; i < end; i += W) {
      const std::size_t k = end - i < W ? end - i : W;
      float xt[W], it[W], zt[W];
      const float *xp = x + i, *ip = inv + i, *zpp = zp + i;
      if (k < W) {
        for (std::size_t t = 0; t < W; ++t) {
          xt[t] = t < k ? x[i + t] : 0.0f;
          it[t] = t < k ? inv[i + t] : 1.0f;
          zt[t] = t < k ? zp[i + t] : 0.0f;
        }
        xp = xt, ip = it, zpp = zt;
      }
      const V vi = V::load(ip);
      const V c = code_vec<I, Mode>(V::load(xp), one, vi, false, V::load(zpp), vlo, vhi, lo, key);
      std::uint8_t out[16];
      Q::store_bytes(out, c);
      std::memcpy(codes + i, out, k);
      lo = Q::add(lo, step);
    }
    i = end;
  }
}

inline void pack_generic(const std::uint8_t* codes, std::size_t n, int bits, std::uint8_t* out) {
  const std::uint32_t mask = (1u << bits) - 1;
  std::size_t byte = 0;
  std::uint32_t acc = 0;
  int have = 0;
  for (std::size_t i = 0; i < n; ++i) {
    acc |= (codes[i] & mask) << have;
    have += bits;
    while (have >= 8) {
      out[byte++] = static_cast<std::uint8_t>(acc);
      acc >>= 8;
      have -= 8;
    }
  }
  if (have > 0) out[byte] = static_cast<std::uint8_t>(acc);
}

inline void unpack_generic(const std::uint8_t* in, std::size_t n, int bits, bool is_signed, std::uint8_t* codes) {
  const std::uint32_t mask = (1u << bits) - 1;
  std::size_t byte = 0;
  std::uint32_t acc = 0;
  int have = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (have < bits) {
      acc |= static_cast<std::uint32_t>(in[byte++]) << have;
      have += 8;
    }
    std::uint32_t c = acc & mask;
    acc >>= bits;
    have -= bits;
    if (is_signed && (c >> (bits - 1))) c |= ~mask;
    codes[i] = static_cast<std::uint8_t>(c);
  }
}

}  // namespace

template <Isa I>
std::size_t quant_minmax(const float* x, std::size_t n, float* lo, float* hi) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  V a = V::set1(x[0]), b = a, a2 = a, b2 = a;
  auto ok = isfinite(a);
  std::size_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    const V u = V::load(x + i), v = V::load(x + i + W);
    a = min(a, u);
    b = max(b, u);
    a2 = min(a2, v);
    b2 = max(b2, v);
    ok = mask_and(ok, mask_and(isfinite(u), isfinite(v)));
  }
  for (; i + W <= n; i += W) {
    const V u = V::load(x + i);
    a = min(a, u);
    b = max(b, u);
    ok = mask_and(ok, isfinite(u));
  }
  if (i < n) {  // pad with x[0]: it cannot change the min, the max or finiteness
    float tmp[W];
    for (std::size_t k = 0; k < W; ++k) tmp[k] = x[0];
    std::memcpy(tmp, x + i, (n - i) * sizeof(float));
    const V u = V::load(tmp);
    a = min(a, u);
    b = max(b, u);
    ok = mask_and(ok, isfinite(u));
  }
  if (!all(ok)) {
    for (std::size_t k = 0; k < n; ++k)
      if (!__builtin_isfinite(x[k])) return k;
  }
  *lo = QOps<I>::hmin(min(a, a2));  // exact: the order of min/max does not matter
  *hi = QOps<I>::hmax(max(b, b2));
  return n;
}

template <Isa I>
void quant_codes(const float* x, std::size_t n, float scale, float inv, bool use_div, float zp, float qmin,
                 float qmax, int rounding, std::uint64_t seed, std::uint64_t index, std::uint8_t* codes) {
  if (rounding == 0)
    codes_impl<I, 0>(x, n, scale, inv, use_div, zp, qmin, qmax, seed, index, codes);
  else if (rounding == 1)
    codes_impl<I, 1>(x, n, scale, inv, use_div, zp, qmin, qmax, seed, index, codes);
  else
    codes_impl<I, 2>(x, n, scale, inv, use_div, zp, qmin, qmax, seed, index, codes);
}

template <Isa I>
std::size_t quant_groups(const float* x, std::size_t n, std::size_t gs, int bits, bool symmetric, int rounding,
                         std::uint64_t seed, std::uint64_t index, float* scale, std::int32_t* zero_point,
                         std::uint8_t* codes) {
  const int qmax = symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  const float fmax = static_cast<float>(qmax), fmin = symmetric ? -fmax : 0.0f;
  std::size_t first = n;
  for (std::size_t g = 0, j = 0; j < n; ++g, j += gs) {
    const std::size_t len = n - j < gs ? n - j : gs;
    float lo, hi;
    const std::size_t k = quant_minmax<I>(x + j, len, &lo, &hi);
    if (k < len) {
      first = first < n ? first : j + k;
      scale[g] = __builtin_nanf("");
      zero_point[g] = 0;
      std::memset(codes + j, 0, len);
      continue;
    }
    const quant::Param p = quant::make_param(lo, hi, lo == hi, qmax, symmetric);
    scale[g] = p.scale;
    zero_point[g] = static_cast<std::int32_t>(p.zp);
    if (rounding == 0)
      codes_impl<I, 0>(x + j, len, p.scale, p.inv, p.use_div, p.zp, fmin, fmax, seed, index + j, codes + j);
    else if (rounding == 1)
      codes_impl<I, 1>(x + j, len, p.scale, p.inv, p.use_div, p.zp, fmin, fmax, seed, index + j, codes + j);
    else
      codes_impl<I, 2>(x + j, len, p.scale, p.inv, p.use_div, p.zp, fmin, fmax, seed, index + j, codes + j);
  }
  return first;
}

template <Isa I>
void quant_codes_cols(const float* x, std::size_t n, const float* inv, const float* zp, float qmin, float qmax,
                      int rounding, std::uint64_t seed, std::uint64_t index, std::uint8_t* codes) {
  if (rounding == 0)
    codes_cols_impl<I, 0>(x, n, inv, zp, qmin, qmax, seed, index, codes);
  else if (rounding == 1)
    codes_cols_impl<I, 1>(x, n, inv, zp, qmin, qmax, seed, index, codes);
  else
    codes_cols_impl<I, 2>(x, n, inv, zp, qmin, qmax, seed, index, codes);
}

template <Isa I>
void quant_dequant_cols(const std::uint8_t* codes, bool is_signed, std::size_t n, const float* scale,
                        const float* zp, float* out) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr std::size_t W = V::width;
  std::size_t i = 0;
  for (; i + 16 <= n; i += W)
    (V::load(scale + i) * (Q::load_codes(codes + i, is_signed) - V::load(zp + i))).store(out + i);
  for (; i < n; i += W) {
    const std::size_t k = n - i < W ? n - i : W;
    std::uint8_t ct[16] = {};
    float st[W] = {}, zt[W] = {}, res[W];
    std::memcpy(ct, codes + i, k);
    std::memcpy(st, scale + i, k * sizeof(float));
    std::memcpy(zt, zp + i, k * sizeof(float));
    (V::load(st) * (Q::load_codes(ct, is_signed) - V::load(zt))).store(res);
    std::memcpy(out + i, res, k * sizeof(float));
  }
}

template <Isa I>
void quant_dequant(const std::uint8_t* codes, bool is_signed, std::size_t n, float scale, float zp, float* out) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr std::size_t W = V::width;
  const V vs = V::set1(scale), vz = V::set1(zp);
  std::size_t i = 0;
  for (; i + 16 <= n; i += W) (vs * (Q::load_codes(codes + i, is_signed) - vz)).store(out + i);
  if (i < n) {  // the loads above read 8 (avx2) or 16 (avx512) bytes
    std::uint8_t tmp[16] = {};
    float res[W];
    for (; i < n; i += W) {
      const std::size_t k = n - i < W ? n - i : W;
      std::memcpy(tmp, codes + i, k);
      (vs * (Q::load_codes(tmp, is_signed) - vz)).store(res);
      std::memcpy(out + i, res, k * sizeof(float));
    }
  }
}

template <Isa I>
void quant_pack(const std::uint8_t* codes, std::size_t n, int bits, std::uint8_t* out) {
  if (bits == 8) {
    std::memcpy(out, codes, n);
    return;
  }
  std::size_t i = 0;
  if (bits == 4) {
    // maddubs: (c_even & 15) * 1 + (c_odd & 15) * 16 per 16-bit lane, then
    // the low bytes of the 16 lanes, in order.
    const __m256i m = _mm256_set1_epi8(0x0F), w = _mm256_set1_epi16(0x1001);
    for (; i + 32 <= n; i += 32) {
      const __m256i c = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i)), m);
      const __m256i s = _mm256_maddubs_epi16(c, w);
      const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi16(s, s), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i / 2), _mm256_castsi256_si128(p));
    }
  } else if (bits == 2) {
    for (; i + 4 <= n; i += 4)
      out[i / 4] = static_cast<std::uint8_t>((codes[i] & 3) | (codes[i + 1] & 3) << 2 | (codes[i + 2] & 3) << 4 |
                                             (codes[i + 3] & 3) << 6);
  }
  pack_generic(codes + i, n - i, bits, out + i * static_cast<std::size_t>(bits) / 8);
}

template <Isa I>
void quant_unpack(const std::uint8_t* in, std::size_t n, int bits, bool is_signed, std::uint8_t* codes) {
  if (bits == 8) {
    std::memcpy(codes, in, n);
    return;
  }
  std::size_t i = 0;
  if (bits == 4) {
    const __m128i m = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    for (; i + 32 <= n; i += 32) {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i / 2));
      __m128i lo = _mm_and_si128(b, m), hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
      if (is_signed) {  // (c ^ 8) - 8 sign-extends a nibble
        lo = _mm_sub_epi8(_mm_xor_si128(lo, eight), eight);
        hi = _mm_sub_epi8(_mm_xor_si128(hi, eight), eight);
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm_unpacklo_epi8(lo, hi));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i + 16), _mm_unpackhi_epi8(lo, hi));
    }
  }
  unpack_generic(in + i * static_cast<std::size_t>(bits) / 8, n - i, bits, is_signed, codes + i);
}

// ---------------------------------------------------------------- GGUF
// The oracle (kernels_quant_scalar.cpp), called for degenerate blocks.
template <>
void gguf_quantize<Isa::scalar>(int type, const float* x, std::size_t n_blocks, std::uint8_t* out);

// One block of 32 per iteration, the oracle's float32 steps in its order
// (see kernels_quant_scalar.cpp); the per-block scalars (d, 1/d) are plain
// float divisions here too. A block whose 1/d or d is not finite (tiny or
// huge values: NumPy's NaN/inf casts decide its codes) goes to the oracle.
namespace {

inline void put_half_f16c(std::uint8_t* p, float v) {
  const int h = _mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(v), _MM_FROUND_TO_NEAREST_INT), 0);
  const auto u = static_cast<std::uint16_t>(h);
  std::memcpy(p, &u, 2);
}
inline float get_half_f16c(const std::uint8_t* p) {
  std::uint16_t u;
  std::memcpy(&u, p, 2);
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(u)));
}

// Up to 16 blocks per call, in three phases, so the long per-block chain
// (reduction -> two divisions -> codes) overlaps across blocks:
//  1. per block, the statistic: amax (Q8_0), the signed first largest |x|
//     (Q4_0, Q5_0), or min and max (Q4_1, Q5_1);
//  2. vectorized over the 16 blocks: d, 1/d (0 when d == 0), float16 bits;
//  3. per block: header and codes. A block with a non-finite d or 1/d goes
//     to the oracle (NumPy's NaN/inf casts decide its codes).
template <Isa I>
inline void gguf_blocks_simd(int type, const float* x, std::size_t nb, std::uint8_t* out, std::size_t ts) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr int W = static_cast<int>(V::width), K = 32 / W;
  const auto t = static_cast<quant::GgufType>(type);
  const bool q8 = t == quant::GgufType::q8_0;
  const bool sym = q8 || t == quant::GgufType::q4_0 || t == quant::GgufType::q5_0;
  const bool five = t == quant::GgufType::q5_0 || t == quant::GgufType::q5_1;
  alignas(64) float s1[16] = {}, s2[16] = {}, dv[16], idv[16];
  alignas(64) std::uint16_t hd[16], hm[16];
  for (std::size_t b = 0; b < nb; ++b) {
    const float* xb = x + 32 * b;
    V v[K];
    for (int k = 0; k < K; ++k) v[k] = V::load(xb + k * W);
    if (sym) {
      V a = abs(v[0]);
      for (int k = 1; k < K; ++k) a = max(a, abs(v[k]));
      const float amax = Q::hmax(a);
      if (q8) {
        s1[b] = amax;
      } else {
        std::uint32_t hits = 0;  // first index of the largest |x| (argmax)
        for (int k = 0; k < K; ++k) hits |= Q::eq_mask(abs(v[k]), amax) << (k * W);
        s1[b] = xb[__builtin_ctz(hits)];
      }
    } else {
      V lo = v[0], hi = v[0];
      for (int k = 1; k < K; ++k) {
        lo = min(lo, v[k]);
        hi = max(hi, v[k]);
      }
      s1[b] = Q::hmin(lo);
      s2[b] = Q::hmax(hi);
    }
  }
  const float div = q8 ? 127.0f : t == quant::GgufType::q4_0 ? -8.0f : t == quant::GgufType::q5_0 ? -16.0f
                  : t == quant::GgufType::q4_1 ? 15.0f : 31.0f;
  for (int i = 0; i < 16; i += W) {
    const V d = (sym ? V::load(s1 + i) : V::load(s2 + i) - V::load(s1 + i)) / V::set1(div);
    const V id = select(le(abs(d), V::zero()), V::zero(), V::set1(1.0f) / d);
    d.store(dv + i);
    id.store(idv + i);
  }
  for (int i = 0; i < 16; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(hd + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(dv + i), _MM_FROUND_TO_NEAREST_INT));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(hm + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(s1 + i), _MM_FROUND_TO_NEAREST_INT));
  }
  for (std::size_t b = 0; b < nb; ++b) {
    const float* xb = x + 32 * b;
    std::uint8_t* o = out + ts * b;
    if (!__builtin_isfinite(idv[b]) || !__builtin_isfinite(dv[b])) {
      gguf_quantize<Isa::scalar>(type, xb, 1, o);
      continue;
    }
    V v[K], c[K];
    for (int k = 0; k < K; ++k) v[k] = V::load(xb + k * W);
    const V vid = V::set1(idv[b]);
    std::memcpy(o, hd + b, 2);
    if (q8) {
      for (int k = 0; k < K; ++k) c[k] = Q::round_away(v[k] * vid);
      Q::block_bytes(c, o + 2);
      continue;
    }
    const V top = V::set1(five ? 31.0f : 15.0f);
    if (sym) {
      const V bias = V::set1(five ? 16.5f : 8.5f);
      for (int k = 0; k < K; ++k) c[k] = min(Q::trunc(v[k] * vid + bias), top);
      o += 2;
    } else {
      const V vmn = V::set1(s1[b]), half = V::set1(0.5f);
      for (int k = 0; k < K; ++k) c[k] = min(Q::trunc((v[k] - vmn) * vid + half), top);
      std::memcpy(o + 2, hm + b, 2);
      o += 4;
    }
    std::uint8_t q[32];
    Q::block_bytes(c, q);
    const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
    if (five) {
      const auto qh = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(qa, 3)));
      std::memcpy(o, &qh, 4);
      o += 4;
    }
    const __m128i m4 = _mm_set1_epi8(0x0F);
    const __m128i lo = _mm_and_si128(_mm256_castsi256_si128(qa), m4);
    const __m128i hi = _mm_and_si128(_mm256_extracti128_si256(qa, 1), m4);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o), _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
  }
}

template <Isa I>
inline void gguf_unblock_simd(int type, const std::uint8_t* in, float* x) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr int W = static_cast<int>(V::width), K = 32 / W;
  const auto t = static_cast<quant::GgufType>(type);
  const V d = V::set1(get_half_f16c(in));
  if (t == quant::GgufType::q8_0) {
    for (int k = 0; k < K; ++k) (d * Q::codes8(in + 2, k)).store(x + k * W);
    return;
  }
  const bool affine = t == quant::GgufType::q4_1 || t == quant::GgufType::q5_1;
  const bool five = t == quant::GgufType::q5_0 || t == quant::GgufType::q5_1;
  const V m = V::set1(affine ? get_half_f16c(in + 2) : 0.0f);
  const std::uint8_t* p = in + (affine ? 4 : 2);
  std::uint32_t qh = 0;
  if (five) {
    std::memcpy(&qh, p, 4);
    p += 4;
  }
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  std::uint8_t q[32];
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q), _mm_and_si128(b, _mm_set1_epi8(0x0F)));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(q + 16), _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F)));
  const V off = V::set1(five ? 16.0f : 8.0f);
  for (int k = 0; k < K; ++k) {
    const V c = Q::codes5(q, qh, k, five);
    if (affine)
      (d * c + m).store(x + k * W);
    else
      (d * (c - off)).store(x + k * W);
  }
}

}  // namespace

template <Isa I>
void gguf_quantize(int type, const float* x, std::size_t n_blocks, std::uint8_t* out) {
  const std::size_t ts = quant::gguf_type_size(static_cast<quant::GgufType>(type));
  for (std::size_t b = 0; b < n_blocks; b += 16)
    gguf_blocks_simd<I>(type, x + 32 * b, n_blocks - b < 16 ? n_blocks - b : 16, out + ts * b, ts);
}

template <Isa I>
void gguf_dequantize(int type, const std::uint8_t* in, std::size_t n_blocks, float* out) {
  const std::size_t ts = quant::gguf_type_size(static_cast<quant::GgufType>(type));
  for (std::size_t b = 0; b < n_blocks; ++b) gguf_unblock_simd<I>(type, in + ts * b, out + 32 * b);
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template std::size_t quant_minmax<SLIMGRAD_UNIT_ISA>(const float*, std::size_t, float*, float*);
template void quant_codes<SLIMGRAD_UNIT_ISA>(const float*, std::size_t, float, float, bool, float, float, float, int,
                                    std::uint64_t, std::uint64_t, std::uint8_t*);
template std::size_t quant_groups<SLIMGRAD_UNIT_ISA>(const float*, std::size_t, std::size_t, int, bool, int, std::uint64_t,
                                              std::uint64_t, float*, std::int32_t*, std::uint8_t*);
template void quant_codes_cols<SLIMGRAD_UNIT_ISA>(const float*, std::size_t, const float*, const float*, float, float, int,
                                          std::uint64_t, std::uint64_t, std::uint8_t*);
template void quant_dequant_cols<SLIMGRAD_UNIT_ISA>(const std::uint8_t*, bool, std::size_t, const float*, const float*,
                                            float*);
template void quant_dequant<SLIMGRAD_UNIT_ISA>(const std::uint8_t*, bool, std::size_t, float, float, float*);
template void quant_pack<SLIMGRAD_UNIT_ISA>(const std::uint8_t*, std::size_t, int, std::uint8_t*);
template void quant_unpack<SLIMGRAD_UNIT_ISA>(const std::uint8_t*, std::size_t, int, bool, std::uint8_t*);
template void gguf_quantize<SLIMGRAD_UNIT_ISA>(int, const float*, std::size_t, std::uint8_t*);
template void gguf_dequantize<SLIMGRAD_UNIT_ISA>(int, const std::uint8_t*, std::size_t, float*);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
