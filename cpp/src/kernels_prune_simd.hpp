// Prune kernels written once, instantiated by the per-ISA units the
// build generates (CMakeLists.txt). All the work is on integer keys (|x| bits), so
// every path is exact and agrees with the scalar oracle bit for bit.
//  - Intrinsics: 256-bit AVX2 integer ops (and, shifts, compares, shuffles).
//    A lane mask becomes 0/1 mask bytes, or the permutation that left-packs
//    histogram candidates, by a 256-entry table (kLaneTables), not by BMI2's
//    pdep / pext: AMD's AVX2-only Zen 1 and Zen 2 run those in microcode, at
//    tens to hundreds of cycles each (Zen 3 and later, Intel: 3). N:M with
//    m = 4 ranks each group with three in-lane rotations. N:M along an outer
//    axis (inner >= width, m <= 16) vectorizes across the inner axis; other
//    N:M shapes use the scalar kernel.
//  - The avx512 level reuses these 256-bit bodies (x86-64-v4 includes AVX2
//    and BMI2), except in the passes of magnitude selection (histogram,
//    threshold_keep; codes_keep, which reads only the mask codes, has both): there the 256-bit body is bound by its instruction
//    count, not by memory (~1 cycle per element, 9 GB/s per core on an Intel
//    Xeon), and AVX-512's compare-into-mask, vpcompressd (register form:
//    the memory form is slow on Zen 4) and masked byte moves do the same work
//    in a third of the instructions per element.
//  - Keys of float32 are below 2^31 and of float64 below 2^63 (sign bit
//    cleared, +1 for a prior mask), so signed integer compares order them.
//    float16 and bfloat16 keys (below 2^15) are zero-extended into float's
//    32-bit lanes as they are loaded; from there on, float's code runs.
//  - Tails (n % width elements) run the same integer logic in a scalar loop:
//    no rounding is involved, so no padded copy is needed.
//  - Helpers live in an unnamed namespace: each ISA file gets its own copy,
//    compiled with its own flags (no one-definition-rule trap).
#pragma once

#include <cmath>
#include <cstring>
#include <type_traits>

#include "slimgrad/prune.hpp"
#include "slimgrad/simd.hpp"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace slimgrad::kernels {

// The scalar kernels, for shapes the vector paths do not cover.
template <>
void nm_keep<Isa::scalar, float>(const float*, std::size_t, std::size_t, int, int, std::uint8_t*);
template <>
void nm_keep<Isa::scalar, double>(const double*, std::size_t, std::size_t, int, int, std::uint8_t*);
template <>
void nm_keep<Isa::scalar, Float16>(const Float16*, std::size_t, std::size_t, int, int, std::uint8_t*);
template <>
void nm_keep<Isa::scalar, BFloat16>(const BFloat16*, std::size_t, std::size_t, int, int, std::uint8_t*);

namespace {

#if defined(__AVX2__)
// Integer key vectors: 8 x int32 for float (and the halves), 4 x int64 for double.
template <class T>
struct KeyVec;

template <>
struct KeyVec<float> {
  using Key = std::uint32_t;
  static constexpr std::size_t W = 8;
  // All-ones lanes where the prior mask pruned (byte == 0).
  static __m256i was_pruned(const std::uint8_t* p) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cmpeq_epi32(_mm256_cvtepu8_epi32(b), _mm256_setzero_si256());
  }
  static __m256i set1(Key k) { return _mm256_set1_epi32(static_cast<int>(k)); }
  static __m256i one() { return _mm256_set1_epi32(1); }
  static __m256i add(__m256i a, __m256i b) { return _mm256_add_epi32(a, b); }
  static __m256i sub(__m256i a, __m256i b) { return _mm256_sub_epi32(a, b); }
  static __m256i srl(__m256i a, int s) { return _mm256_srl_epi32(a, _mm_cvtsi32_si128(s)); }
  static unsigned lanes32(unsigned bits) { return bits; }  // one 32-bit lane per key
  static __m256i eq(__m256i a, __m256i b) { return _mm256_cmpeq_epi32(a, b); }
  static __m256i gt(__m256i a, __m256i b) { return _mm256_cmpgt_epi32(a, b); }
  static __m256i max(__m256i a, __m256i b) { return _mm256_max_epi32(a, b); }
  static unsigned bits(__m256i m) { return static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(m))); }
  static __m256i copy_offsets(Key bins) {  // lane j counts into copy j % 4
    const int b = static_cast<int>(bins);
    return _mm256_setr_epi32(0, b, 2 * b, 3 * b, 0, b, 2 * b, 3 * b);
  }
  static void store_codes(std::uint8_t* p, __m256i codes) {  // the low byte of each lane (codes <= 255)
    __m256i b = _mm256_packus_epi32(codes, codes);  // per 128-bit half: c0 c1 c2 c3 c0 c1 c2 c3
    b = _mm256_packus_epi16(b, b);                  // bytes, the half's 4 codes first
    const std::uint64_t v = static_cast<std::uint32_t>(_mm256_cvtsi256_si32(b)) |
                            static_cast<std::uint64_t>(static_cast<std::uint32_t>(_mm256_extract_epi32(b, 4))) << 32;
    std::memcpy(p, &v, 8);
  }
};

template <>
struct KeyVec<double> {
  using Key = std::uint64_t;
  static constexpr std::size_t W = 4;
  static __m256i was_pruned(const std::uint8_t* p) {
    int b4;
    std::memcpy(&b4, p, 4);
    return _mm256_cmpeq_epi64(_mm256_cvtepu8_epi64(_mm_cvtsi32_si128(b4)), _mm256_setzero_si256());
  }
  static __m256i set1(Key k) { return _mm256_set1_epi64x(static_cast<long long>(k)); }
  static __m256i one() { return _mm256_set1_epi64x(1); }
  static __m256i add(__m256i a, __m256i b) { return _mm256_add_epi64(a, b); }
  static __m256i sub(__m256i a, __m256i b) { return _mm256_sub_epi64(a, b); }
  static __m256i srl(__m256i a, int s) { return _mm256_srl_epi64(a, _mm_cvtsi32_si128(s)); }
  static unsigned lanes32(unsigned bits) {  // two per key
    return ((bits & 1u) | (bits & 2u) << 1 | (bits & 4u) << 2 | (bits & 8u) << 3) * 3u;
  }
  static __m256i eq(__m256i a, __m256i b) { return _mm256_cmpeq_epi64(a, b); }
  static __m256i gt(__m256i a, __m256i b) { return _mm256_cmpgt_epi64(a, b); }
  static __m256i max(__m256i a, __m256i b) { return _mm256_blendv_epi8(b, a, _mm256_cmpgt_epi64(a, b)); }
  static unsigned bits(__m256i m) { return static_cast<unsigned>(_mm256_movemask_pd(_mm256_castsi256_pd(m))); }
  static __m256i copy_offsets(Key bins) {
    const long long b = static_cast<long long>(bins);
    return _mm256_setr_epi64x(0, b, 2 * b, 3 * b);
  }
  static void store_codes(std::uint8_t* p, __m256i codes) {  // byte 0 of each 64-bit lane
    // per 128-bit half: bytes 0 and 8 (its two lanes' codes) to bytes 0 and 1, zeros elsewhere
    const auto pick = static_cast<long long>(0x8080808080800800ULL);
    const auto zero = static_cast<long long>(0x8080808080808080ULL);
    const __m256i b = _mm256_shuffle_epi8(codes, _mm256_setr_epi64x(pick, zero, pick, zero));
    const auto v = static_cast<std::uint32_t>(static_cast<std::uint16_t>(_mm256_cvtsi256_si32(b)) |
                                              static_cast<std::uint32_t>(_mm256_extract_epi16(b, 8)) << 16);
    std::memcpy(p, &v, 4);
  }
};

// Half keys sit in float's 32-bit lanes: after the load, every kernel is float's.
template <>
struct KeyVec<Float16> : KeyVec<float> {};
template <>
struct KeyVec<BFloat16> : KeyVec<float> {};

// W raw keys at p (the vector raw_key).
template <class T>
inline __m256i raw_keys(const T* p) {
  using Key = typename KeyVec<T>::Key;
  constexpr Key mask = (Key(1) << KeyTraits<T>::bits) - 1;
  if constexpr (is_half_v<T>)  // 8 halves, zero-extended
    return _mm256_and_si256(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
                            KeyVec<T>::set1(mask));
  else
    return _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), KeyVec<T>::set1(mask));
}

template <class T>
inline __m256i keys(const T* x, const std::uint8_t* prior, std::size_t i, __m256i raw) {
  using KV = KeyVec<T>;
  if (!prior) return raw;
  (void)x;
  return _mm256_andnot_si256(KV::was_pruned(prior + i), KV::add(raw, KV::one()));
}

// Per 8-bit lane mask m, 8 bytes: spread[m] has byte j = bit j of m;
// pack[m] has byte j = the lane of m's j-th set bit (0 past the last), the
// permutation that left-packs those lanes. 4 KiB, in L1 during a pass.
struct LaneTables {
  std::uint64_t spread[256], pack[256];
  constexpr LaneTables() : spread(), pack() {
    for (unsigned m = 0; m < 256; ++m)
      for (unsigned lane = 0, set = 0; lane < 8; ++lane)
        if (m >> lane & 1u) {
          spread[m] |= std::uint64_t(1) << (8 * lane);
          pack[m] |= std::uint64_t(lane) << (8 * set++);
        }
  }
};
inline constexpr LaneTables kLaneTables{};

// Moves the 32-bit lanes selected by `lanes` (bit j = lane j) to the front, in order.
inline __m256i left_pack(__m256i v, unsigned lanes) {
  const __m128i order = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(&kLaneTables.pack[lanes]));
  return _mm256_permutevar8x32_epi32(v, _mm256_cvtepu8_epi32(order));
}

// Lane mask bits (one per lane) -> one 0/1 byte per lane.
inline std::uint64_t spread_bits(unsigned bits) { return kLaneTables.spread[bits]; }

// 32 codes (int32 lanes of vectors a, b, c, d, each <= 255) -> 32 bytes in
// order, one store; ab = packus_epi32(a, b), cd = packus_epi32(c, d) (packed
// as they come, so that fewer vectors are live at once).
inline void store_codes32(std::uint8_t* p, __m256i ab, __m256i cd) {
  // per 128-bit half, dwords: a0-3 b0-3 c0-3 d0-3 | a4-7 b4-7 c4-7 d4-7
  const __m256i bytes = _mm256_packus_epi16(ab, cd);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                      _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

template <class T>
inline std::size_t hsum(__m256i v) {
  alignas(32) KeyOf<T> t[KeyVec<T>::W];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
  std::size_t s = 0;
  for (std::size_t j = 0; j < KeyVec<T>::W; ++j) s += static_cast<std::size_t>(t[j]);
  return s;
}

template <class T>
inline KeyOf<T> hmax(__m256i v) {
  alignas(32) KeyOf<T> t[KeyVec<T>::W];
  _mm256_store_si256(reinterpret_cast<__m256i*>(t), v);
  KeyOf<T> m = 0;
  for (std::size_t j = 0; j < KeyVec<T>::W; ++j) m = t[j] > m ? t[j] : m;
  return m;
}
#endif  // __AVX2__

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// 512-bit key vectors with compare results in mask registers: 16 x int32
// for float, 8 x int64 for double.
template <class T>
struct KeyVec512;

template <>
struct KeyVec512<float> {
  using Key = std::uint32_t;
  using Mask = __mmask16;
  static constexpr std::size_t W = 16;
  static __m512i raw(const float* p) { return _mm512_and_si512(_mm512_loadu_si512(p), _mm512_set1_epi32(0x7fffffff)); }
  // Lanes whose prior mask byte is non-zero (kept before).
  static Mask was_kept(const std::uint8_t* p) {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm_test_epi8_mask(b, b);
  }
  static __m512i set1(Key k) { return _mm512_set1_epi32(static_cast<int>(k)); }
  static __m512i maskz_add_one(Mask m, __m512i a) { return _mm512_maskz_add_epi32(m, a, _mm512_set1_epi32(1)); }
  static __m512i sub(__m512i a, __m512i b) { return _mm512_sub_epi32(a, b); }
  static __m512i srl(__m512i a, int s) { return _mm512_srl_epi32(a, _mm_cvtsi32_si128(s)); }
  static __m512i max(__m512i a, __m512i b) { return _mm512_max_epi32(a, b); }
  static Mask gt(__m512i a, __m512i b) { return _mm512_cmpgt_epi32_mask(a, b); }
  static Mask eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi32_mask(a, b); }
  static __m512i compress(Mask m, __m512i v) { return _mm512_maskz_compress_epi32(m, v); }
  static void store_keep(std::uint8_t* p, Mask m) {  // one 0/1 byte per lane
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm_maskz_mov_epi8(m, _mm_set1_epi8(1)));
  }
  static Key hmax(__m512i v) { return static_cast<Key>(_mm512_reduce_max_epi32(v)); }
  // 1 + digit in candidate lanes, kCodeBelow / kCodeAbove elsewhere, one byte per lane.
  static void store_codes(std::uint8_t* p, Mask cand, Mask below, __m512i digit) {
    const __m512i rest = _mm512_maskz_mov_epi32(static_cast<Mask>(~below), _mm512_set1_epi32(kCodeAbove));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm512_cvtepi32_epi8(_mm512_mask_add_epi32(rest, cand, digit, _mm512_set1_epi32(1))));
  }
};

template <>
struct KeyVec512<double> {
  using Key = std::uint64_t;
  using Mask = __mmask8;
  static constexpr std::size_t W = 8;
  static __m512i raw(const double* p) {
    return _mm512_and_si512(_mm512_loadu_si512(p), _mm512_set1_epi64(0x7fffffffffffffffLL));
  }
  static Mask was_kept(const std::uint8_t* p) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return static_cast<Mask>(_mm_test_epi8_mask(b, b));
  }
  static __m512i set1(Key k) { return _mm512_set1_epi64(static_cast<long long>(k)); }
  static __m512i maskz_add_one(Mask m, __m512i a) { return _mm512_maskz_add_epi64(m, a, _mm512_set1_epi64(1)); }
  static __m512i sub(__m512i a, __m512i b) { return _mm512_sub_epi64(a, b); }
  static __m512i srl(__m512i a, int s) { return _mm512_srl_epi64(a, _mm_cvtsi32_si128(s)); }
  static __m512i max(__m512i a, __m512i b) { return _mm512_max_epi64(a, b); }
  static Mask gt(__m512i a, __m512i b) { return _mm512_cmpgt_epi64_mask(a, b); }
  static Mask eq(__m512i a, __m512i b) { return _mm512_cmpeq_epi64_mask(a, b); }
  static __m512i compress(Mask m, __m512i v) { return _mm512_maskz_compress_epi64(m, v); }
  static void store_keep(std::uint8_t* p, Mask m) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p), _mm_maskz_mov_epi8(m, _mm_set1_epi8(1)));
  }
  static Key hmax(__m512i v) { return static_cast<Key>(_mm512_reduce_max_epi64(v)); }
  static void store_codes(std::uint8_t* p, Mask cand, Mask below, __m512i digit) {
    const __m512i rest = _mm512_maskz_mov_epi64(static_cast<Mask>(~below), _mm512_set1_epi64(kCodeAbove));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(p),
                     _mm512_cvtepi64_epi8(_mm512_mask_add_epi64(rest, cand, digit, _mm512_set1_epi64(1))));
  }
};

// Halves: 16 keys zero-extended into float's lanes.
struct KeyVec512Half : KeyVec512<float> {
  static __m512i raw(const void* p) {
    return _mm512_and_si512(_mm512_cvtepu16_epi32(_mm256_loadu_si256(static_cast<const __m256i*>(p))),
                            _mm512_set1_epi32(0x7fff));
  }
};
template <>
struct KeyVec512<Float16> : KeyVec512Half {};
template <>
struct KeyVec512<BFloat16> : KeyVec512Half {};

// The selection keys of W elements from their raw keys (see keys()).
template <class T>
inline __m512i keys512(const std::uint8_t* prior, std::size_t i, __m512i raw) {
  using KV = KeyVec512<T>;
  return prior ? KV::maskz_add_one(KV::was_kept(prior + i), raw) : raw;
}
#define SLIMGRAD_PRUNE_AVX512 1
#endif  // AVX-512 F, BW, VL

}  // namespace

// Candidates are rare after the first digit (a few percent), and a branch
// per vector on "any candidate?" mispredicts often; so each block of
// kPackBlock elements first left-packs the candidates' digits into a small
// buffer without branches, then increments the counters for the buffer
// (entry j into copy j % 4, so runs of equal digits do not serialize).
// pack(i, out) packs the digits of elements [i, i + W) at out (writing W
// entries; buf holds kPackBlock + W) and returns how many it packed.
// Returns where the whole vectors end.
inline constexpr std::size_t kPackBlock = 512;
template <std::size_t W, class Key, class Pack>
inline std::size_t count_packed_digits(std::size_t n, Key* buf, std::uint32_t* hist, Key bins, Pack&& pack) {
  constexpr std::size_t kBlock = kPackBlock;
  std::size_t i = 0;
  while (i + W <= n) {
    const std::size_t avail = (n - i) / W * W;
    const std::size_t end = i + (avail < kBlock ? avail : kBlock);
    std::size_t count = 0;
    for (; i < end; i += W) count += pack(i, buf + count);
    std::size_t j = 0;
    for (; j + 4 <= count; j += 4) {
      ++hist[buf[j]];
      ++hist[bins + buf[j + 1]];
      ++hist[2 * bins + buf[j + 2]];
      ++hist[3 * bins + buf[j + 3]];
    }
    for (; j < count; ++j) ++hist[(j % kHistCopies) * bins + buf[j]];
  }
  return i;
}

template <Isa I, class T>
KeyOf<T> histogram(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> base, KeyOf<T> prefix,
                   int hi, int lo, std::uint32_t* hist, std::size_t* below, std::uint8_t* codes) {
  using Key = KeyOf<T>;
  const Key bins = Key(1) << (hi - lo);
  const Key digit_mask = bins - 1;
  Key max_raw = 0;
  std::size_t under = 0, i = 0;
#if defined(SLIMGRAD_PRUNE_AVX512)
  using KV = KeyVec512<T>;
  const __m512i vbase = KV::set1(base), vprefix = KV::set1(prefix), vmask = KV::set1(digit_mask);
  __m512i vmax = _mm512_setzero_si512();
  alignas(64) Key buf[kPackBlock + KV::W];
  i = count_packed_digits<KV::W>(n, buf, hist, bins, [&](std::size_t at, Key* out) {
    // x prefetched ahead: the compares, digit extraction and left-packing
    // keep the out-of-order window full, and without it the 4096 x 4096
    // float32 selection took 5.3-5.5 ms at 1 thread instead of 4.5
    // (docs/prune.md). The AVX2 pass below is slower in its arithmetic and
    // showed no difference (7.9 ms either way): not prefetched.
    simd::prefetch(x + at, simd::kPrefetchAhead);
    const __m512i raw = KV::raw(x + at);
    vmax = KV::max(vmax, raw);
    const __m512i key = keys512<T>(prior, at, raw);
    const typename KV::Mask under_base = KV::gt(vbase, key);
    under += static_cast<std::size_t>(__builtin_popcount(under_base));
    const __m512i k = KV::sub(key, vbase);
    const typename KV::Mask cand = KV::eq(KV::srl(k, hi), vprefix);
    const __m512i digit = _mm512_and_si512(KV::srl(k, lo), vmask);
    if (codes) KV::store_codes(codes + at, cand, under_base, digit);
    _mm512_storeu_si512(out, KV::compress(cand, digit));
    return static_cast<std::size_t>(__builtin_popcount(cand));
  });
  max_raw = KV::hmax(vmax);
#elif defined(__AVX2__)
  using KV = KeyVec<T>;
  const __m256i vbase = KV::set1(base), vprefix = KV::set1(prefix), vmask = KV::set1(digit_mask);
  __m256i vmax = _mm256_setzero_si256();
  // Keys under base, per lane (a piece has at most kGrain elements, so a
  // lane's count fits), added up once at the end.
  __m256i vunder = _mm256_setzero_si256();
  alignas(32) Key buf[kPackBlock + 4 * KV::W];
  // One vector: its candidates' digits left-packed at out (returns how many)
  // and, with codes, its codes.
  const auto step = [&](std::size_t at, Key* out, __m256i& code) {
    const __m256i raw = raw_keys<T>(x + at);
    vmax = KV::max(vmax, raw);
    const __m256i key = keys(x, prior, at, raw);
    // Keys and base are below 2^31 (2^63): a signed compare orders them.
    const __m256i under_base = KV::gt(vbase, key);
    vunder = KV::sub(vunder, under_base);
    const __m256i k = KV::sub(key, vbase);
    const __m256i cand_lanes = KV::eq(KV::srl(k, hi), vprefix);
    const unsigned cand = KV::bits(cand_lanes);
    const __m256i d = _mm256_and_si256(KV::srl(k, lo), vmask);
    if (codes)
      code = _mm256_blendv_epi8(_mm256_andnot_si256(under_base, KV::set1(kCodeAbove)), KV::add(d, KV::one()),
                                cand_lanes);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), left_pack(d, KV::lanes32(cand)));
    return static_cast<std::size_t>(__builtin_popcount(cand));
  };
  if constexpr (KV::W == 8) {  // 32-bit keys: float and the halves
    // Four vectors at a time, so that their 32 codes go out in one store
    // (per vector, the narrowing to 8 bytes took 8 instructions).
    i = count_packed_digits<4 * KV::W>(n, buf, hist, bins, [&](std::size_t at, Key* out) {
      __m256i a, b, c, d;
      std::size_t got = step(at, out, a);
      got += step(at + KV::W, out + got, b);
      const __m256i ab = codes ? _mm256_packus_epi32(a, b) : a;
      got += step(at + 2 * KV::W, out + got, c);
      got += step(at + 3 * KV::W, out + got, d);
      if (codes) store_codes32(codes + at, ab, _mm256_packus_epi32(c, d));
      return got;
    });
  } else {
    i = count_packed_digits<KV::W>(n, buf, hist, bins, [&](std::size_t at, Key* out) {
      __m256i code;
      const std::size_t got = step(at, out, code);
      if (codes) KV::store_codes(codes + at, code);
      return got;
    });
  }
  under += hsum<T>(vunder);
  max_raw = hmax<T>(vmax);
#endif
  for (; i < n; ++i) {
    const Key raw = raw_key(x[i]);
    max_raw = raw > max_raw ? raw : max_raw;
    const Key key = key_at(x, prior, i);
    under += key < base;
    const Key k = key - base;
    const bool candidate = (k >> hi) == prefix;
    if (candidate) ++hist[(i % kHistCopies) * bins + ((k >> lo) & digit_mask)];
    if (codes)
      codes[i] = candidate    ? static_cast<std::uint8_t>(1 + ((k >> lo) & digit_mask))
                 : key < base ? kCodeBelow
                              : kCodeAbove;
  }
  *below += under;
  return max_raw;
}

template <Isa I>
std::size_t codes_keep(std::uint8_t* codes, std::size_t n, std::uint8_t code, std::uint32_t* pos) {
  std::size_t i = 0, found = 0;
  auto list = [&](std::uint64_t lanes) {  // set bits j: codes[i + j] == code (rare)
    for (; lanes; lanes &= lanes - 1) pos[found++] = static_cast<std::uint32_t>(i + __builtin_ctzll(lanes));
  };
#if defined(SLIMGRAD_PRUNE_AVX512)
  const __m512i vcode = _mm512_set1_epi8(static_cast<char>(code));
  for (; i + 64 <= n; i += 64) {
    const __m512i c = _mm512_loadu_si512(codes + i);
    list(_mm512_cmpeq_epi8_mask(c, vcode));
    _mm512_storeu_si512(codes + i, _mm512_maskz_mov_epi8(_mm512_cmpgt_epu8_mask(c, vcode), _mm512_set1_epi8(1)));
  }
#elif defined(__AVX2__)
  // c > code <=> max(c, code + 1) == c (unsigned bytes; code < kCodeAbove)
  const __m256i vcode = _mm256_set1_epi8(static_cast<char>(code)), vnext = _mm256_set1_epi8(static_cast<char>(code + 1));
  for (; i + 32 <= n; i += 32) {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + i));
    list(static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_cmpeq_epi8(c, vcode))));
    const __m256i kept = _mm256_cmpeq_epi8(_mm256_max_epu8(c, vnext), c);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + i), _mm256_and_si256(kept, _mm256_set1_epi8(1)));
  }
#endif
  for (; i < n; ++i) {
    if (codes[i] == code) pos[found++] = static_cast<std::uint32_t>(i);
    codes[i] = codes[i] > code;
  }
  return found;
}

template <Isa I, class T>
std::size_t count_equal(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> key) {
  std::size_t c = 0, i = 0;
#if defined(__AVX2__)
  using KV = KeyVec<T>;
  const __m256i vkey = KV::set1(key);
  for (; i + KV::W <= n; i += KV::W)
    c += static_cast<std::size_t>(__builtin_popcount(KV::bits(KV::eq(keys(x, prior, i, raw_keys<T>(x + i)), vkey))));
#endif
  for (; i < n; ++i) c += key_at(x, prior, i) == key;
  return c;
}

// Lists (key, index) of the elements i + j for the set bits j of `lanes`, in
// order, after the `found` listed so far; returns the new count.
template <class T>
inline std::size_t list_lanes(const T* x, const std::uint8_t* prior, std::size_t i, unsigned lanes,
                              KeyOf<T>* amb_keys, std::uint32_t* amb_pos, std::size_t found) {
  for (; lanes; lanes &= lanes - 1) {
    const unsigned j = static_cast<unsigned>(__builtin_ctz(lanes));
    amb_keys[found] = key_at(x, prior, i + j);
    amb_pos[found++] = static_cast<std::uint32_t>(i + j);
  }
  return found;
}

template <Isa I, class T>
std::size_t threshold_keep(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> bound,
                           KeyOf<T> amb_lo, std::uint8_t* keep, KeyOf<T>* amb_keys,
                           std::uint32_t* amb_pos) {
  std::size_t i = 0, found = 0;
#if defined(SLIMGRAD_PRUNE_AVX512)
  using KV = KeyVec512<T>;
  constexpr std::size_t W = KV::W;
  // key >= bound  <=>  key > bound - 1 (bound - 1 = -1 when bound is 0).
  const __m512i below = KV::set1(bound - 1), vlo = KV::set1(amb_lo);
  for (; i + W <= n; i += W) {
    const __m512i k = keys512<T>(prior, i, KV::raw(x + i));
    const typename KV::Mask kept = KV::gt(k, below);
    KV::store_keep(keep + i, kept);
    // The ambiguous few (a narrow key range): a rarely taken branch.
    const auto amb = static_cast<unsigned>(static_cast<typename KV::Mask>(~kept & ~KV::gt(vlo, k)));
    if (amb) found = list_lanes(x, prior, i, amb, amb_keys, amb_pos, found);
  }
#elif defined(__AVX2__)
  using KV = KeyVec<T>;
  constexpr std::size_t W = KV::W;
  // key >= bound  <=>  key > bound - 1 (bound - 1 = -1 when bound is 0).
  const __m256i below = KV::set1(bound - 1), vlo = KV::set1(amb_lo);
  constexpr unsigned all = (1u << W) - 1;
  for (; i + W <= n; i += W) {
    const __m256i k = keys(x, prior, i, raw_keys<T>(x + i));
    const unsigned kept = KV::bits(KV::gt(k, below));
    const std::uint64_t bytes = spread_bits(kept);
    std::memcpy(keep + i, &bytes, W);
    // The ambiguous few (a narrow key range): a rarely taken branch.
    const unsigned amb = all & ~kept & ~KV::bits(KV::gt(vlo, k));
    if (amb) found = list_lanes(x, prior, i, amb, amb_keys, amb_pos, found);
  }
#endif
  return threshold_keep_from(x, prior, i, n, bound, amb_lo, keep, amb_keys, amb_pos, found);
}

template <Isa I, class T>
void nm_keep(const T* x, std::size_t rows, std::size_t inner, int n, int m, std::uint8_t* keep) {
#if defined(__AVX2__)
  if (m == 4 && inner == 1) {
    // Each group of 4 is a 128-bit lane (float) or a whole register
    // (double). Rotations by r compare lane t with lane s = (t + r) % 4;
    // s < t exactly for the lanes t >= 4 - r, where ties also count.
    using KV = KeyVec<T>;
    constexpr std::size_t W = KV::W;
    const std::size_t total = rows * 4;
    const __m256i need = KV::set1(static_cast<KeyOf<T>>(m - n - 1));
    __m256i tie_lanes[3];
    for (int r = 1; r <= 3; ++r) {
      alignas(32) KeyOf<T> t[W];
      for (std::size_t j = 0; j < W; ++j) t[j] = static_cast<int>(j % 4) >= 4 - r ? ~KeyOf<T>(0) : 0;
      tie_lanes[r - 1] = _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
    }
    std::size_t i = 0;
    for (; i + W <= total; i += W) {
      const __m256i k = raw_keys<T>(x + i);
      __m256i rot[3];
      if constexpr (W == 8) {
        rot[0] = _mm256_shuffle_epi32(k, _MM_SHUFFLE(0, 3, 2, 1));
        rot[1] = _mm256_shuffle_epi32(k, _MM_SHUFFLE(1, 0, 3, 2));
        rot[2] = _mm256_shuffle_epi32(k, _MM_SHUFFLE(2, 1, 0, 3));
      } else {
        rot[0] = _mm256_permute4x64_epi64(k, _MM_SHUFFLE(0, 3, 2, 1));
        rot[1] = _mm256_permute4x64_epi64(k, _MM_SHUFFLE(1, 0, 3, 2));
        rot[2] = _mm256_permute4x64_epi64(k, _MM_SHUFFLE(2, 1, 0, 3));
      }
      __m256i rank = _mm256_setzero_si256();
      for (int r = 0; r < 3; ++r) {
        const __m256i before = _mm256_or_si256(KV::gt(k, rot[r]),
                                               _mm256_and_si256(KV::eq(k, rot[r]), tie_lanes[r]));
        rank = KV::add(rank, _mm256_and_si256(before, KV::one()));
      }
      const std::uint64_t bytes = spread_bits(KV::bits(KV::gt(rank, need)));
      std::memcpy(keep + i, &bytes, W);
    }
    if (i < total) nm_keep<Isa::scalar, T>(x + i, (total - i) / 4, 1, n, m, keep + i);
    return;
  }
  if (inner >= KeyVec<T>::W && m <= 16) {
    // Groups along an outer axis (conv channels): the vector runs across
    // `inner` (W groups at once); rank by all m (m - 1) / 2 pairs.
    using KV = KeyVec<T>;
    constexpr std::size_t W = KV::W;
    const std::size_t row = static_cast<std::size_t>(m) * inner;
    const __m256i need = KV::set1(static_cast<KeyOf<T>>(m - n - 1)), ones = KV::set1(~KeyOf<T>(0));
    for (std::size_t r = 0; r < rows; ++r) {
      const T* xr = x + r * row;
      std::uint8_t* kr = keep + r * row;
      std::size_t j = 0;
      for (; j + W <= inner; j += W) {
        __m256i k[16], rank[16];
        for (int t = 0; t < m; ++t) {
          k[t] = raw_keys<T>(xr + static_cast<std::size_t>(t) * inner + j);
          rank[t] = _mm256_setzero_si256();
        }
        for (int t = 1; t < m; ++t)
          for (int s = 0; s < t; ++s) {
            // s (the lower index) goes first unless its key is larger.
            const __m256i s_later = KV::gt(k[s], k[t]);
            rank[s] = KV::sub(rank[s], s_later);
            rank[t] = KV::sub(rank[t], _mm256_andnot_si256(s_later, ones));
          }
        for (int t = 0; t < m; ++t) {
          const std::uint64_t bytes = spread_bits(KV::bits(KV::gt(rank[t], need)));
          std::memcpy(kr + static_cast<std::size_t>(t) * inner + j, &bytes, W);
        }
      }
      for (; j < inner; ++j)  // the last inner % W columns
        for (int t = 0; t < m; ++t) {
          const KeyOf<T> kt = raw_key(xr[static_cast<std::size_t>(t) * inner + j]);
          int rank = 0;
          for (int s = 0; s < m; ++s) {
            const KeyOf<T> ks = raw_key(xr[static_cast<std::size_t>(s) * inner + j]);
            rank += ks < kt || (ks == kt && s < t);
          }
          kr[static_cast<std::size_t>(t) * inner + j] = rank >= m - n;
        }
    }
    return;
  }
#endif
  nm_keep<Isa::scalar, T>(x, rows, inner, n, m, keep);
}

template <Isa I, class T>
std::size_t find_nan(const T* x, std::size_t n) {
  if constexpr (is_half_v<T>) {  // a key above inf's (no float arithmetic on halves)
    std::size_t i = 0;
#if defined(__AVX2__)
    const __m256i mask = _mm256_set1_epi16(0x7fff), inf = _mm256_set1_epi16(static_cast<short>(KeyTraits<T>::inf));
    for (; i + 16 <= n; i += 16) {
      const __m256i k = _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), mask);
      const __m256i nan = _mm256_cmpgt_epi16(k, inf);  // keys below 2^15: a signed compare orders them
      if (!_mm256_testz_si256(nan, nan)) break;  // the scalar loop finds which
    }
#endif
    for (; i < n; ++i)
      if (raw_key(x[i]) > KeyTraits<T>::inf) return i;
    return n;
  } else {
    using V = simd::Vec<T, I>;
    // x <= x is false only for NaN.
    return simd::find_first_failing<V>(
        x, n, [](V a) { return simd::le(a, a); }, [](T a) { return !std::isnan(a); });
  }
}

template <Isa I, class U>
void apply_keep(U* a, const std::uint8_t* keep, std::size_t n) {
  std::size_t i = 0;
#if defined(__AVX2__)
  const __m256i zero = _mm256_setzero_si256();
  if constexpr (sizeof(U) == 1) {  // 8-bit optimizer codes: the mask bytes line up with the data
    for (; i + 32 <= n; i += 32) {
      const __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keep + i));
      auto* p = reinterpret_cast<__m256i*>(a + i);
      _mm256_storeu_si256(p, _mm256_andnot_si256(_mm256_cmpeq_epi8(k, zero), _mm256_loadu_si256(p)));
    }
  } else if constexpr (sizeof(U) == 2) {
    for (; i + 16 <= n; i += 16) {
      const __m256i k = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(keep + i)));
      auto* p = reinterpret_cast<__m256i*>(a + i);
      _mm256_storeu_si256(p, _mm256_andnot_si256(_mm256_cmpeq_epi16(k, zero), _mm256_loadu_si256(p)));
    }
  } else if constexpr (sizeof(U) == 4) {
    for (; i + 8 <= n; i += 8) {
      const __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(keep + i)));
      auto* p = reinterpret_cast<__m256i*>(a + i);
      _mm256_storeu_si256(p, _mm256_andnot_si256(_mm256_cmpeq_epi32(k, zero), _mm256_loadu_si256(p)));
    }
  } else {
    for (; i + 4 <= n; i += 4) {
      int b4;
      std::memcpy(&b4, keep + i, 4);
      const __m256i k = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(b4));
      auto* p = reinterpret_cast<__m256i*>(a + i);
      _mm256_storeu_si256(p, _mm256_andnot_si256(_mm256_cmpeq_epi64(k, zero), _mm256_loadu_si256(p)));
    }
  }
#endif
  for (; i < n; ++i)
    if (!keep[i]) a[i] = 0;
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------- instantiations
// Compiled once per ISA by the units CMakeLists.txt generates from its
// kernel list (SLIMGRAD_UNIT_ISA is that unit's level); nothing else defines it.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
#define SLIMGRAD_PRUNE_INSTANTIATE(T)                                                                           \
  template KeyOf<T> histogram<SLIMGRAD_UNIT_ISA, T>(const T*, const std::uint8_t*, std::size_t, KeyOf<T>,       \
                                             KeyOf<T>, int, int, std::uint32_t*, std::size_t*,                  \
                                             std::uint8_t*);                                                    \
  template std::size_t count_equal<SLIMGRAD_UNIT_ISA, T>(const T*, const std::uint8_t*, std::size_t,            \
                                                 KeyOf<T>);                                                     \
  template std::size_t threshold_keep<SLIMGRAD_UNIT_ISA, T>(const T*, const std::uint8_t*, std::size_t,         \
                                                   KeyOf<T>, KeyOf<T>, std::uint8_t*, KeyOf<T>*,                \
                                                   std::uint32_t*);                                             \
  template void nm_keep<SLIMGRAD_UNIT_ISA, T>(const T*, std::size_t, std::size_t, int, int, std::uint8_t*);     \
  template std::size_t find_nan<SLIMGRAD_UNIT_ISA, T>(const T*, std::size_t);
SLIMGRAD_PRUNE_INSTANTIATE(float)
SLIMGRAD_PRUNE_INSTANTIATE(double)
SLIMGRAD_PRUNE_INSTANTIATE(Float16)
SLIMGRAD_PRUNE_INSTANTIATE(BFloat16)
#undef SLIMGRAD_PRUNE_INSTANTIATE
template std::size_t codes_keep<SLIMGRAD_UNIT_ISA>(std::uint8_t*, std::size_t, std::uint8_t, std::uint32_t*);
template void apply_keep<SLIMGRAD_UNIT_ISA, std::uint8_t>(std::uint8_t*, const std::uint8_t*, std::size_t);
template void apply_keep<SLIMGRAD_UNIT_ISA, std::uint16_t>(std::uint16_t*, const std::uint8_t*, std::size_t);
template void apply_keep<SLIMGRAD_UNIT_ISA, std::uint32_t>(std::uint32_t*, const std::uint8_t*, std::size_t);
template void apply_keep<SLIMGRAD_UNIT_ISA, std::uint64_t>(std::uint64_t*, const std::uint8_t*, std::size_t);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
