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
//  - tails go through a padded stack copy and the same vector arithmetic.
// Helpers have internal linkage and std:: algorithms are avoided (per-file
// ISA flags + ODR). Integer-only work (pack/unpack) uses AVX2 intrinsics in
// both units. Per-ISA helpers (QOps): kernels_quant_ops_x86.hpp; GGUF
// blocks: kernels_quant_gguf_simd.hpp (its own kernel area).
#pragma once

#include <immintrin.h>

#include <cstring>

#include "kernels_quant_ops_x86.hpp"
#include "slimgrad/quant.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace {

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

// body(i, end, lo, key) over the pieces [i, end) of [0, n): a piece never
// crosses a multiple of 2^32 in the flat index (index + i), so for stochastic
// rounding (Mode 2) the high half, part of the key, is constant within it.
// lo holds the low 32 bits of the flat indices of the piece's first vector.
template <Isa I, int Mode, class Body>
void for_pieces(std::size_t n, std::uint64_t seed, std::uint64_t index, Body&& body) {
  using Q = QOps<I>;
  std::size_t i = 0;
  while (i < n) {
    const std::uint64_t f = index + i;
    const std::uint64_t to_wrap = (std::uint64_t{1} << 32) - (f & 0xFFFFFFFFu);
    const std::size_t end = (Mode == 2 && to_wrap < n - i) ? i + static_cast<std::size_t>(to_wrap) : n;
    const quant::StreamKey key = Mode == 2 ? quant::stream_key(seed, static_cast<std::uint32_t>(f >> 32))
                                           : quant::StreamKey{0, 0};
    body(i, end, Q::add(Q::set1(static_cast<std::uint32_t>(f)), Q::iota()), key);
    i = end;
  }
}

template <Isa I, int Mode>
void codes_impl(const float* x, std::size_t n, float scale, float inv, bool use_div, float zp, float qmin,
                float qmax, std::uint64_t seed, std::uint64_t index, std::uint8_t* codes) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr std::size_t W = V::width;
  const V vs = V::set1(scale), vi = V::set1(inv), vz = V::set1(zp), vlo = V::set1(qmin), vhi = V::set1(qmax);
  const typename Q::VI step = Q::set1(static_cast<std::uint32_t>(W));
  for_pieces<I, Mode>(n, seed, index, [&](std::size_t i, std::size_t end, typename Q::VI lo, quant::StreamKey key) {
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
    }
  });
}

// Channels along the last axis: per-lane inv and zero point.
template <Isa I, int Mode>
void codes_cols_impl(const float* x, std::size_t n, const float* inv, const float* zp, float qmin, float qmax,
                     std::uint64_t seed, std::uint64_t index, std::uint8_t* codes) {
  using V = Vec<float, I>;
  using Q = QOps<I>;
  constexpr std::size_t W = V::width;
  const V vlo = V::set1(qmin), vhi = V::set1(qmax), one = V::set1(1.0f);
  const typename Q::VI step = Q::set1(static_cast<std::uint32_t>(W));
  for_pieces<I, Mode>(n, seed, index, [&](std::size_t i, std::size_t end, typename Q::VI lo, quant::StreamKey key) {
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
  });
}

}  // namespace

// The scalar reference (kernels_quant_scalar.cpp) packs and unpacks the
// tails that are not a whole vector block.
template <>
void quant_pack<Isa::scalar>(const std::uint8_t* codes, std::size_t n, int bits, std::uint8_t* out);
template <>
void quant_unpack<Isa::scalar>(const std::uint8_t* in, std::size_t n, int bits, bool is_signed,
                               std::uint8_t* codes);

template <Isa I>
std::size_t quant_minmax(const float* x, std::size_t n, float* lo, float* hi) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  V a = V::set1(x[0]), b = a, a2 = a, b2 = a;
  auto ok = isfinite(a);
  std::size_t i = 0;
  for (; i + 2 * W <= n; i += 2 * W) {
    prefetch_ahead(x + i, 2 * W * sizeof(float));
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
  return quant::quantize_groups(
      x, n, gs, bits, symmetric, scale, zero_point, codes,
      [](const float* v, std::size_t len, float* lo, float* hi) { return quant_minmax<I>(v, len, lo, hi); },
      [&](const float* v, std::size_t len, const quant::Param& p, float qmin, float qmax, std::size_t j,
          std::uint8_t* c) {
        quant_codes<I>(v, len, p.scale, p.inv, p.use_div, p.zp, qmin, qmax, rounding, seed, index + j, c);
      });
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
  std::size_t i = 0;  // 8 bits (a copy) and the tail: the scalar kernel below
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
  quant_pack<Isa::scalar>(codes + i, n - i, bits, out + i * static_cast<std::size_t>(bits) / 8);
}

template <Isa I>
void quant_unpack(const std::uint8_t* in, std::size_t n, int bits, bool is_signed, std::uint8_t* codes) {
  std::size_t i = 0;  // 8 bits (a copy) and the tail: the scalar kernel below
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
  quant_unpack<Isa::scalar>(in + i * static_cast<std::size_t>(bits) / 8, n - i, bits, is_signed, codes + i);
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
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
