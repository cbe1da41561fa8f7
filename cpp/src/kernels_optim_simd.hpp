// The elementwise optimizer steps on simd.hpp vectors, written once and
// instantiated by the per-ISA units the build generates (CMakeLists.txt).
//  - The per-algorithm update is each row's Rule<A>::simd
//    (kernels_optim_rules.hpp), reached through dispatch_rule (one case per
//    row of optim_table.hpp); this file is the runner every row shares: the
//    clip, maximize and weight decay prologue, storage, tails, rounding.
//  - One pass: each vector of p, g and the states is loaded once, updated,
//    stored once. The algorithm and the storage type are template
//    parameters; option flags are uniform branches (predicted, hoisted).
//  - Same operations in the same order as the scalar oracle
//    (kernels_optim_scalar.cpp, Rule<A>::ref), and the area is "exact" in
//    CMakeLists.txt (-ffp-contract=off) so the compiler does not fuse a*b+c
//    into an FMA: every ISA gives the same bits as the scalar reference. The
//    step is memory bound; FMA would not make it faster.
//  - Tails: the last k < width elements go through padded copies
//    (load_partial / store_partial), i.e. the same arithmetic as the body.
//  - float16/bfloat16: widened to float32 (F16C / shifts), math on the float32
//    master (or, without master_weights, on the widened param), rounded back
//    in the same pass: round-to-nearest-even vector stores, or vector
//    stochastic rounding (sr_round8/16: the scalar functions of optim.hpp
//    lane by lane, bit for bit).
//  - bfloat16 state (StateIO<..., Bf16 = true>): loads widen, stores round
//    (nearest even or stochastic); the rules see float32 vectors either way.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels_optim_rules.hpp"
#include "slimgrad/optim.hpp"
#include "slimgrad/simd.hpp"

// The per-vector helpers below (and SLIMGRAD_OPTIM_INLINE, kernels_optim_rules_common.hpp)
// must inline into the loops of run(): a call per vector costs more than the
// memory traffic saved.
#define SLIMGRAD_LAMBDA_INLINE __attribute__((always_inline))

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace optim_simd {

// Loads/stores of one vector position: full vectors or a padded tail.
template <class V, bool Full>
struct Access {
  using T = typename V::Scalar;
  static constexpr bool full = Full;
  std::size_t k;  // lanes in use (tail only)
  V ld(const T* p) const {
    if constexpr (Full) return V::load(p);
    else return load_partial<V>(p, k);
  }
  void st(T* p, V x) const {
    if constexpr (Full) x.store(p);
    else store_partial(p, k, x);
  }
};

// The new p of one vector position: the common prologue, then the row's
// rule. `st` loads and stores the state slots there (StateIO: T, or bfloat16
// rounded on store).
template <Algo A, class V, class S>
SLIMGRAD_OPTIM_INLINE V update(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g, const S& st) {
  using T = typename V::Scalar;
  if (k.maximize) g = g * V::set1(T(-1));  // exact negation, -0 included
  if (k.has_wd) {
    if (k.decoupled)
      p = p * c.wd_scale;
    else
      g = g + c.wd * p;
  }
  return Rule<A>::simd(k, c, p, g, st);
}

#if defined(__AVX2__)
// Stochastic rounding of 8 floats, the vector form of bf16_stochastic /
// f16_stochastic (optim.hpp), bit for bit. In an anonymous namespace: this
// header is compiled once per ISA unit, and internal linkage keeps the AVX2
// copy and the AVX-512-flagged copy apart (the per-file-flags ODR trap).
namespace {

SLIMGRAD_OPTIM_INLINE __m128i pack16(__m256i v) {  // 8 lanes < 65536 -> 8 uint16
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08));
}

// shift: which bits of the hash (16 for the odd bfloat16 state slots).
SLIMGRAD_OPTIM_INLINE void sr_round8(__m256 x, std::uint16_t* out, std::uint64_t key, std::uint64_t index0, bool bf16,
                                     int shift = 0) {
  const __m256i r = _mm256_srl_epi32(sr_bits_lanes<simd::U32<Isa::avx2>>(key, index0).v, _mm_cvtsi32_si128(shift));
  const __m256 finite = _mm256_cmp_ps(_mm256_sub_ps(x, x), _mm256_setzero_ps(), _CMP_EQ_OQ);
  __m256i res;
  if (bf16) {
    const __m256i sr = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_castps_si256(x), _mm256_and_si256(r, _mm256_set1_epi32(0xFFFF))), 16);
    res = _mm256_blendv_epi8(simd::bf16_round_bits(simd::F8{x}), sr, _mm256_castps_si256(finite));
  } else {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m128i down = _mm256_cvtps_ph(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256i d32 = _mm256_cvtepu16_epi32(down);
    const __m256i u32 = _mm256_add_epi32(d32, _mm256_set1_epi32(1));
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 fd = _mm256_andnot_ps(sign, _mm256_cvtph_ps(down));
    const __m256 fu = _mm256_andnot_ps(sign, _mm256_cvtph_ps(pack16(u32)));
    const __m256 frac = _mm256_div_ps(_mm256_sub_ps(ax, fd), _mm256_sub_ps(fu, fd));
    const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(r, 8)), _mm256_set1_ps(5.9604644775390625e-8f));
    const __m256 up = _mm256_and_ps(_mm256_cmp_ps(u, frac, _CMP_LT_OQ), _mm256_cmp_ps(fd, ax, _CMP_NEQ_OQ));
    const __m256i sr = _mm256_blendv_epi8(d32, u32, _mm256_castps_si256(up));
    const __m256i near = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m256 special = _mm256_or_ps(_mm256_cmp_ps(ax, _mm256_set1_ps(65504.0f), _CMP_GT_OQ),
                                        _mm256_xor_ps(finite, _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
    res = _mm256_blendv_epi8(sr, near, _mm256_castps_si256(special));
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), pack16(res));
}

}  // namespace
#endif  // __AVX2__

#if defined(__AVX512F__)
// The same for 16 lanes with AVX-512 (masks instead of blends).
namespace {

SLIMGRAD_OPTIM_INLINE void sr_round16(__m512 x, std::uint16_t* out, std::uint64_t key, std::uint64_t index0,
                                      bool bf16, int shift = 0) {
  const __m512i r = _mm512_srl_epi32(sr_bits_lanes<simd::U32<Isa::avx512>>(key, index0).v, _mm_cvtsi32_si128(shift));
  const __mmask16 finite = _mm512_cmp_ps_mask(_mm512_sub_ps(x, x), _mm512_setzero_ps(), _CMP_EQ_OQ);
  __m512i res;
  if (bf16) {
    const __m512i bits = _mm512_castps_si512(x);
    const __m512i sr = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_and_si512(r, _mm512_set1_epi32(0xFFFF))), 16);
    // Nearest even for inf/NaN (NaN quieted), as simd::store_bf16.
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i near = _mm512_srli_epi32(_mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    near = _mm512_mask_or_epi32(near, nan, _mm512_srli_epi32(bits, 16), _mm512_set1_epi32(0x40));
    res = _mm512_mask_blend_epi32(finite, near, sr);
  } else {
    const __m256i down = _mm512_cvtps_ph(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512i d32 = _mm512_cvtepu16_epi32(down);
    const __m512i u32 = _mm512_add_epi32(d32, _mm512_set1_epi32(1));
    const __m512 ax = _mm512_abs_ps(x);
    const __m512 fd = _mm512_abs_ps(_mm512_cvtph_ps(down));
    const __m512 fu = _mm512_abs_ps(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(u32)));
    const __m512 frac = _mm512_div_ps(_mm512_sub_ps(ax, fd), _mm512_sub_ps(fu, fd));
    const __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(r, 8)), _mm512_set1_ps(5.9604644775390625e-8f));
    const __mmask16 up = _mm512_cmp_ps_mask(u, frac, _CMP_LT_OQ) & _mm512_cmp_ps_mask(fd, ax, _CMP_NEQ_OQ);
    const __m512i sr = _mm512_mask_blend_epi32(up, d32, u32);
    const __m512i near = _mm512_cvtepu16_epi32(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __mmask16 special =
        static_cast<__mmask16>(_mm512_cmp_ps_mask(ax, _mm512_set1_ps(65504.0f), _CMP_GT_OQ) | ~finite);
    res = _mm512_mask_blend_epi32(special, sr, near);
  }
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), _mm512_cvtepi32_epi16(res));
}

}  // namespace
#endif  // __AVX512F__

// float16/bfloat16 vectors: widen n lanes (n < W: zero-padded copy).
template <Isa I, bool Full>
SLIMGRAD_OPTIM_INLINE Vec<float, I> load_half(const std::uint16_t* p, std::size_t n, bool bf16) {
  if constexpr (Full) {
    return bf16 ? load_bf16<I>(p) : load_f16<I>(p);
  } else {
    std::uint16_t tmp[Vec<float, I>::width] = {};
    std::memcpy(tmp, p, n * sizeof(std::uint16_t));
    return bf16 ? load_bf16<I>(tmp) : load_f16<I>(tmp);
  }
}

// Stochastic rounding of the W lanes of x (element indices index0 + j) to
// out[0, W) with the bits sr_bits(key, index) >> shift: the vector forms
// where the low 32 bits of the index do not wrap within the vector, else the
// scalar functions of optim.hpp (same bits).
template <Isa I>
SLIMGRAD_OPTIM_INLINE void round_stochastic(std::uint16_t* out, Vec<float, I> x, bool bf16, std::uint64_t key,
                                            std::uint64_t index0, int shift) {
  constexpr std::size_t W = Vec<float, I>::width;
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) {
    if (static_cast<std::uint32_t>(index0) <= 0xFFFFFFF0u) return sr_round16(x.v, out, key, index0, bf16, shift);
  }
#endif
#if defined(__AVX2__)
  if constexpr (I == Isa::avx2) {
    if (static_cast<std::uint32_t>(index0) <= 0xFFFFFFF8u) return sr_round8(x.v, out, key, index0, bf16, shift);
  }
#endif
  float xs[W];
  x.store(xs);
  for (std::size_t q = 0; q < W; ++q) {
    const std::uint32_t r = sr_bits(key, index0 + q) >> shift;
    out[q] = bf16 ? bf16_stochastic(xs[q], r) : f16_stochastic(xs[q], r);
  }
}

// x rounded to bfloat16 (nearest even, NaN quieted): the bfloat16 bits in
// the high half of each 32-bit lane, the low half left over. (Anonymous: one
// copy per ISA unit, as sr_round8 / sr_round16.)
namespace {
#if defined(__AVX512BW__)
SLIMGRAD_OPTIM_INLINE __m512i bf16_rne_high(Vec<float, Isa::avx512> x) {
  const __m512i bits = _mm512_castps_si512(x.v);
  const __mmask16 odd = _mm512_test_epi32_mask(bits, _mm512_set1_epi32(0x10000));
  __m512i t = _mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF));
  t = _mm512_mask_add_epi32(t, odd, t, _mm512_set1_epi32(1));
  const __mmask16 nan = _mm512_cmp_ps_mask(x.v, x.v, _CMP_UNORD_Q);
  return _mm512_mask_or_epi32(t, nan, bits, _mm512_set1_epi32(0x400000));
}
#endif
#if defined(__AVX2__)
SLIMGRAD_OPTIM_INLINE __m256i bf16_rne_high(Vec<float, Isa::avx2> x) {
  const __m256i bits = _mm256_castps_si256(x.v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i t = _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), lsb);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x.v, x.v, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(t, _mm256_or_si256(bits, _mm256_set1_epi32(0x400000)), nan);
}
#endif
}  // namespace

// Round to nearest even to bfloat16, as simd::store_bf16 (NaN quieted),
// in fewer instructions: on AVX-512 the rounding bias through a mask add,
// NaN through a masked or, and the high halves picked by one word permute;
// on AVX2 the high halves picked by a byte shuffle, not shifted and packed
// (bfloat16 AdamW without master weights, 16M elements, 2 threads: 10.4 ->
// 10.0 ms; the step is bound by instructions at 8 lanes).
template <Isa I>
SLIMGRAD_OPTIM_INLINE void store_bf16_fast(std::uint16_t* out, Vec<float, I> x) {
#if defined(__AVX512BW__)
  if constexpr (I == Isa::avx512) {
    const __m512i t = bf16_rne_high(x);
    const __m512i hi = _mm512_set_epi16(31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 31, 29,
                                        27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out),
                        _mm512_castsi512_si256(_mm512_permutexvar_epi16(hi, t)));
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (I == Isa::avx2) {
    const __m256i t = bf16_rne_high(x);
    // the high half of every 32-bit lane to the low 8 bytes of its 128-bit lane
    const __m256i hi = _mm256_setr_epi8(2, 3, 6, 7, 10, 11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1, 2, 3, 6, 7, 10,
                                        11, 14, 15, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(t, hi), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm256_castsi256_si128(packed));
    return;
  }
#endif
  store_bf16(out, x);
}

// Rounds x to float16/bfloat16 and stores n lanes (all W if Full).
template <Isa I, bool Full>
SLIMGRAD_OPTIM_INLINE void store_half(std::uint16_t* dst, Vec<float, I> x, std::size_t n, bool bf16, bool stochastic,
                       std::uint64_t key, std::uint64_t index0, int shift = 0) {
  std::uint16_t tmp[Vec<float, I>::width];
  std::uint16_t* out = Full ? dst : tmp;
  if (stochastic)
    round_stochastic<I>(out, x, bf16, key, index0, shift);
  else if (bf16)
    store_bf16_fast<I>(out, x);
  else
    store_f16(out, x);
  if constexpr (!Full) std::memcpy(dst, tmp, n * sizeof(std::uint16_t));
}

// What the state accessors of one call share.
struct StateBase {
  void* s[3];
  bool stochastic;
  std::uint64_t key[2];  // state_sr_key(seed, step, slot / 2)
  std::uint64_t offset;  // the array's first element within its list
};

// The state slots at one vector position (element i, n lanes in use): T, or
// (Bf16) bfloat16 widened on load and rounded on store.
template <Isa I, class T, bool Full, bool Bf16>
struct StateIO {
  using V = Vec<T, I>;
  const StateBase& b;
  std::size_t i, n;
  SLIMGRAD_OPTIM_INLINE V ld(int j) const {
    if constexpr (Bf16) {
      return load_half<I, Full>(static_cast<const std::uint16_t*>(b.s[j]) + i, n, true);
    } else {
      const T* q = static_cast<const T*>(b.s[j]) + i;
      if constexpr (Full) return V::load(q);
      else return load_partial<V>(q, n);
    }
  }
  SLIMGRAD_OPTIM_INLINE void st(int j, V x) const {
    if constexpr (Bf16) {
      // Slots 2k and 2k + 1 share one hash (low and high 16 bits, see
      // state_sr_key); inlined, the compiler computes it once.
      store_half<I, Full>(static_cast<std::uint16_t*>(b.s[j]) + i, x, n, true, b.stochastic, b.key[j / 2],
                          b.offset + i, 16 * (j % 2));
    } else {
      T* q = static_cast<T*>(b.s[j]) + i;
      if constexpr (Full) x.store(q);
      else store_partial(q, n, x);
    }
  }
};

// The arrays one call streams through, prefetched kAhead elements ahead of
// the sweep. Why: Adam's square root and division (and the other rows'
// divisions) fill the out-of-order window, so the loads that would start the
// next lines' misses issue late, and the hardware prefetchers alone kept the
// 1-array Adam step at 0.75-0.88 of the streaming probe on one thread of the
// Intel Xeon VM (docs/optim.md, "Software prefetch"). The last lines'
// prefetches run past the range's end: harmless (simd::prefetch). 256, 512
// and 1024 elements ahead measured the same. Counted in elements, not bytes
// (512 float32 = simd::kPrefetchAhead): streams of 2-, 4- and 8-byte
// elements stay at one index.
struct Streams {
  static constexpr std::size_t kAhead = 512;
  const char* base[6];
  std::size_t size[6];
  int n = 0;
  void add(const void* q, std::size_t elem_size) {
    if (q == nullptr) return;
    base[n] = static_cast<const char*>(q);
    size[n++] = elem_size;
  }
  SLIMGRAD_OPTIM_INLINE void prefetch(std::size_t i) const {
    for (int j = 0; j < n; ++j) simd::prefetch(base[j], (i + kAhead) * size[j]);
  }
};

// Adam / AdamW with bfloat16 moments rounded to nearest even, on bfloat16
// params and gradients without a master copy (torch's fused bfloat16 step)
// or on float32 ones. The generic runner spent ~4 cycles per element on the
// bfloat16 layout at level avx2: with 16 registers its flag branches, spills
// and reloaded constants filled the loop. (Zen 5, one thread, 16M elements,
// nonfinite="ignore": level avx2 16.5-16.8 -> 12.5-12.7 ms, where torch's
// fused step takes 11.4-11.6; level avx512 8.3-8.4 -> 6.4-6.6 ms; float32
// params at avx2 11.3-12.4 -> 10.4-10.5 ms: docs/optim.md.) This loop takes
// two vectors' worth of values per stream at a time and widens bfloat16 with
// one unpack per half (a bfloat16 is the high half of its float): per
// 128-bit lane, the halves hold values 0-3 and 4-7 of that lane's 8, every
// stream in the same order (float32 params through lane permutes), and one
// pack per store puts them back in order. Each element meets the same
// operations in the same order as in the generic runner (so as the scalar
// reference): the bits are the same.
namespace {

template <Isa I>
struct PackedLanes;  // two vectors of float lanes in the unpack order, from and to memory

#if defined(__AVX2__)
template <>
struct PackedLanes<Isa::avx2> {
  using V = Vec<float, Isa::avx2>;
  static SLIMGRAD_OPTIM_INLINE void widen(const std::uint16_t* q, V& lo, V& hi) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q));
    const __m256i z = _mm256_setzero_si256();
    lo.v = _mm256_castsi256_ps(_mm256_unpacklo_epi16(z, v));
    hi.v = _mm256_castsi256_ps(_mm256_unpackhi_epi16(z, v));
  }
  static SLIMGRAD_OPTIM_INLINE void narrow(std::uint16_t* q, V lo, V hi) {  // rounded as store_bf16_fast
    const __m256i a = _mm256_srli_epi32(bf16_rne_high(lo), 16), b = _mm256_srli_epi32(bf16_rne_high(hi), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_packus_epi32(a, b));
  }
  // 16 floats in the same order: lo = the first 4 of each 8, hi = the last 4
  static SLIMGRAD_OPTIM_INLINE void load(const float* q, V& lo, V& hi) {
    const __m256 a = _mm256_loadu_ps(q), b = _mm256_loadu_ps(q + 8);
    lo.v = _mm256_permute2f128_ps(a, b, 0x20);
    hi.v = _mm256_permute2f128_ps(a, b, 0x31);
  }
  static SLIMGRAD_OPTIM_INLINE void store(float* q, V lo, V hi) {
    _mm256_storeu_ps(q, _mm256_permute2f128_ps(lo.v, hi.v, 0x20));
    _mm256_storeu_ps(q + 8, _mm256_permute2f128_ps(lo.v, hi.v, 0x31));
  }
};
#endif

#if defined(__AVX512BW__)
template <>
struct PackedLanes<Isa::avx512> {
  using V = Vec<float, Isa::avx512>;
  static SLIMGRAD_OPTIM_INLINE void widen(const std::uint16_t* q, V& lo, V& hi) {
    const __m512i v = _mm512_loadu_si512(q);
    const __m512i z = _mm512_setzero_si512();
    lo.v = _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, v));
    hi.v = _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, v));
  }
  static SLIMGRAD_OPTIM_INLINE void narrow(std::uint16_t* q, V lo, V hi) {  // rounded as store_bf16_fast
    const __m512i a = _mm512_srli_epi32(bf16_rne_high(lo), 16), b = _mm512_srli_epi32(bf16_rne_high(hi), 16);
    _mm512_storeu_si512(q, _mm512_packus_epi32(a, b));
  }
  // 32 floats in the same order: lo = the first 4 of each 8, hi = the last 4
  static SLIMGRAD_OPTIM_INLINE void load(const float* q, V& lo, V& hi) {
    const __m512 a = _mm512_loadu_ps(q), b = _mm512_loadu_ps(q + 16);
    lo.v = _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27), b);
    hi.v = _mm512_permutex2var_ps(a, _mm512_setr_epi32(4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31), b);
  }
  static SLIMGRAD_OPTIM_INLINE void store(float* q, V lo, V hi) {
    const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    _mm512_storeu_ps(q, _mm512_permutex2var_ps(lo.v, first, hi.v));
    _mm512_storeu_ps(q + 16, _mm512_permutex2var_ps(lo.v, second, hi.v));
  }
};
#endif

// Elements [i, e) in blocks of 2 W; returns where it stopped (fewer left).
// E: the params' and gradients' element type, bfloat16 (uint16_t) or float.
template <Isa I, bool Decay, class E>
std::size_t adam_bf16_state(const StepConsts<float>& k, E* p, const E* g, std::uint16_t* m, std::uint16_t* v,
                            std::size_t i, std::size_t e) {
  using V = Vec<float, I>;
  using P = PackedLanes<I>;
  constexpr std::size_t B = 2 * V::width;
  const V wd_scale = V::set1(k.wd_scale), w = V::set1(k.w), decay = V::set1(k.decay);
  const V omd = V::set1(k.one_minus_decay), neg_c0 = V::set1(k.neg_c0), eps = V::set1(k.eps);
  const double inv_c1 = k.inv_c1;
  // Rule<Algo::adam>::simd for one vector, after update()'s prologue
  const auto update = [&](V pf, V gf, V& mf, V& vf) SLIMGRAD_LAMBDA_INLINE {
    if constexpr (Decay) pf = pf * wd_scale;
    mf = mf + w * (gf - mf);  // vlerp with w < 0.5
    vf = vf * decay + (omd * gf) * gf;
    return pf + (neg_c0 * mf) / (simd::mul_in_double(sqrt(vf), inv_c1) + eps);
  };
  constexpr bool f32 = std::is_same_v<E, float>;
  // No software prefetch: 512 elements ahead in every stream measured the
  // same as none (1 and 2 threads, avx2 and avx512; docs/optim.md).
  for (; i + B <= e; i += B) {
    V p0, p1, g0, g1, m0, m1, v0, v1;
    if constexpr (f32) {
      P::load(p + i, p0, p1);
      P::load(g + i, g0, g1);
    } else {
      P::widen(p + i, p0, p1);
      P::widen(g + i, g0, g1);
    }
    P::widen(m + i, m0, m1);
    P::widen(v + i, v0, v1);
    p0 = update(p0, g0, m0, v0);
    p1 = update(p1, g1, m1, v1);
    P::narrow(m + i, m0, m1);
    P::narrow(v + i, v0, v1);
    if constexpr (f32) P::store(p + i, p0, p1);
    else P::narrow(p + i, p0, p1);
  }
  return i;
}

}  // namespace

template <Isa I, Algo A, class T, bool Bf16State>
void run(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  using V = Vec<T, I>;
  constexpr std::size_t W = V::width;
  const StepConsts<T> k(a);
  const VConsts<V> c(k);
  StateBase sb{{s.s[0], s.s[1], s.s[2]}, a.stochastic, {0, 0}, s.offset};
  Streams streams;
  {
    const std::size_t param = a.storage == Storage::f64   ? sizeof(double)
                              : a.storage == Storage::f32 ? sizeof(float)
                                                          : sizeof(std::uint16_t);
    streams.add(s.p, param);
    streams.add(s.g, param);
    streams.add(s.master, sizeof(float));
    for (void* q : s.s) streams.add(q, Bf16State ? sizeof(std::uint16_t) : sizeof(T));
  }
  if constexpr (Bf16State)
    for (int j = 0; j < 2; ++j) sb.key[j] = state_sr_key(a.seed, a.step, j);
  // Runs body(i, n, Access) over [b, e): full vectors, then a padded tail.
  // Elements [b, i) up to the first 64-byte boundary of the main stream q go
  // through single vectors first, so the main loop runs on cache-line-aligned
  // addresses of it and, since NumPy gives large arrays the same offset
  // within a page and the optimizer places its state accordingly, usually of
  // every other stream too (no split accesses). Results do not change: every
  // element's update is independent.
  const auto sweep_range = [&](const auto* q, std::size_t b, std::size_t e, auto&& body) SLIMGRAD_LAMBDA_INLINE {
    using E = std::remove_cv_t<std::remove_pointer_t<decltype(q)>>;
    std::size_t i = b;
    const auto addr = reinterpret_cast<std::uintptr_t>(q + i);
    if (addr % sizeof(E) == 0) {
      std::size_t head = ((64 - addr % 64) % 64) / sizeof(E);
      if (head > e - i) head = e - i;
      while (head > 0) {
        const std::size_t n = head < W ? head : W;
        if (n == W)
          body(i, n, Access<V, true>{W});
        else
          body(i, n, Access<V, false>{n});
        i += n;
        head -= n;
      }
    }
    // One cache line of q per iteration (a vector, or two when q's elements
    // are narrower than the math type's), and the prefetches for it.
    constexpr std::size_t L = 64 / sizeof(E) > W ? 64 / sizeof(E) : W;
    for (; i + L <= e; i += L) {
      streams.prefetch(i);
      for (std::size_t j = 0; j < L; j += W) body(i + j, W, Access<V, true>{W});
    }
    for (; i + W <= e; i += W) body(i, W, Access<V, true>{W});
    if (i < e) body(i, e - i, Access<V, false>{e - i});
  };
  const auto sweep = [&](const auto* q, auto&& body) SLIMGRAD_LAMBDA_INLINE { sweep_range(q, b, e, body); };
  const auto states = [&](std::size_t i, std::size_t n, auto io) SLIMGRAD_LAMBDA_INLINE {
    return StateIO<I, T, decltype(io)::full, Bf16State>{sb, i, n};
  };
  // A fused clip: the gradient times grad_scale (a uniform branch), as the oracle.
  const V gscale = V::set1(k.gscale);
  const auto clip = [&](V x) SLIMGRAD_LAMBDA_INLINE { return k.has_gscale ? x * gscale : x; };
  // Plain Adam / AdamW with bfloat16 moments on float32 or bfloat16 params:
  // generic(b, i) over the elements before p's first 64-byte boundary (a
  // block's, when blocks are smaller), adam_bf16_state over the blocks,
  // generic over the rest. False when the step is not plain: the caller
  // runs generic over everything.
  const auto plain_adam = [&](auto* p, const auto* g, auto&& generic) SLIMGRAD_LAMBDA_INLINE -> bool {
#if defined(__AVX2__)
    if constexpr ((I == Isa::avx2 || I == Isa::avx512) && A == Algo::adam && Bf16State &&
                  std::is_same_v<T, float>) {
      if (a.stochastic || k.maximize || k.amsgrad || k.has_gscale || !k.c1_by_mul || !(k.w < 0.5f) ||
          (k.has_wd && !k.decoupled))
        return false;
      using E = std::remove_pointer_t<decltype(p)>;
      constexpr std::size_t kAlign = 2 * W * sizeof(E) < 64 ? 2 * W * sizeof(E) : 64;
      const auto addr = reinterpret_cast<std::uintptr_t>(p + b);
      std::size_t i = addr % sizeof(E) ? b : std::min(e, b + (kAlign - addr % kAlign) % kAlign / sizeof(E));
      generic(b, i);
      auto* m = static_cast<std::uint16_t*>(s.s[0]);
      auto* v = static_cast<std::uint16_t*>(s.s[1]);
      i = k.has_wd ? adam_bf16_state<I, true>(k, p, g, m, v, i, e) : adam_bf16_state<I, false>(k, p, g, m, v, i, e);
      generic(i, e);
      return true;
    }
#endif
    (void)p, (void)g, (void)generic;
    return false;
  };

  if constexpr (std::is_same_v<T, double>) {
    double* p = static_cast<double*>(s.p);
    const double* g = static_cast<const double*>(s.g);
    sweep(p, [&](std::size_t i, std::size_t n, auto io) SLIMGRAD_LAMBDA_INLINE {
      io.st(p + i, update<A>(k, c, io.ld(p + i), clip(io.ld(g + i)), states(i, n, io)));
    });
  } else if (a.storage == Storage::f32) {
    float* p = static_cast<float*>(s.p);
    const float* g = static_cast<const float*>(s.g);
    const auto generic = [&](std::size_t b, std::size_t e) SLIMGRAD_LAMBDA_INLINE {
      sweep_range(p, b, e, [&](std::size_t i, std::size_t n, auto io) SLIMGRAD_LAMBDA_INLINE {
        io.st(p + i, update<A>(k, c, io.ld(p + i), clip(io.ld(g + i)), states(i, n, io)));
      });
    };
    if (!plain_adam(p, g, generic)) generic(b, e);
  } else {
    auto* p = static_cast<std::uint16_t*>(s.p);
    const auto* g = static_cast<const std::uint16_t*>(s.g);
    float* master = s.master;
    const bool bf16 = a.storage == Storage::bf16;
    const std::uint64_t key = sr_key(a.seed, a.step);
    if (master != nullptr) {
      // Align on the float32 master (the widest stream).
      sweep(master, [&](std::size_t i, std::size_t n, auto io) SLIMGRAD_LAMBDA_INLINE {
        constexpr bool F = decltype(io)::full;
        const V x = update<A>(k, c, io.ld(master + i), clip(load_half<I, F>(g + i, n, bf16)), states(i, n, io));
        io.st(master + i, x);
        store_half<I, F>(p + i, x, n, bf16, a.stochastic, key, s.offset + i);
      });
    } else {
      // No master: the param is widened, updated and rounded back.
      const auto generic = [&](std::size_t b, std::size_t e) SLIMGRAD_LAMBDA_INLINE {
        sweep_range(p, b, e, [&](std::size_t i, std::size_t n, auto io) SLIMGRAD_LAMBDA_INLINE {
          constexpr bool F = decltype(io)::full;
          const V x = update<A>(k, c, load_half<I, F>(p + i, n, bf16), clip(load_half<I, F>(g + i, n, bf16)),
                                states(i, n, io));
          store_half<I, F>(p + i, x, n, bf16, a.stochastic, key, s.offset + i);
        });
      };
      if (!(bf16 && plain_adam(p, g, generic))) generic(b, e);
    }
  }
}

template <Isa I, class T, bool Bf16State>
void run_algo(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  dispatch_rule(a.algo, [&](auto row) { run<I, decltype(row)::value, T, Bf16State>(a, s, b, e); });
}

}  // namespace optim_simd

template <Isa I>
std::size_t find_nonfinite_half(const std::uint16_t* x, std::size_t n, bool bf16) {
  using V = Vec<float, I>;
  constexpr std::size_t W = V::width;
  std::size_t i = 0;
  const auto ld = [&](std::size_t j) SLIMGRAD_LAMBDA_INLINE {
    return bf16 ? load_bf16<I>(x + j) : load_f16<I>(x + j);
  };
  for (; i + 4 * W <= n; i += 4 * W) {
    prefetch_ahead(x + i, 4 * W * sizeof(*x));
    const auto ok = mask_and(mask_and(isfinite(ld(i)), isfinite(ld(i + W))),
                             mask_and(isfinite(ld(i + 2 * W)), isfinite(ld(i + 3 * W))));
    if (!all(ok)) break;
  }
  const std::uint16_t mask = bf16 ? 0x7F80 : 0x7C00;
  for (; i < n; ++i)
    if ((x[i] & mask) == mask) return i;
  return n;
}

template <Isa I>
void optim_step(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  if (a.storage == Storage::f64)
    optim_simd::run_algo<I, double, false>(a, s, b, e);
  else if (a.bf16_state)
    optim_simd::run_algo<I, float, true>(a, s, b, e);
  else
    optim_simd::run_algo<I, float, false>(a, s, b, e);
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template void optim_step<SLIMGRAD_UNIT_ISA>(const StepArgs&, const Slot&, std::size_t, std::size_t);
template std::size_t find_nonfinite_half<SLIMGRAD_UNIT_ISA>(const std::uint16_t*, std::size_t, bool);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
