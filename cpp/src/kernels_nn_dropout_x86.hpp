// Dropout with Philox-4x32-10 in vector lanes: the per-ISA intrinsics of
// the nn area, included by kernels_nn_simd.hpp's instantiation block (one
// branch per generated ISA unit).
#pragma once

#if defined(__AVX512F__)
// avx512: dropout with Philox-4x32-10 in 16 lanes.
//  - Philox: two sets of eight blocks, one block per 64-bit lane, so each
//    32x32->64 multiply is one vpmuludq and its high word one shift. The
//    4 words x 16 blocks are interleaved (masked blend, unpack, vpermt2q)
//    into element order: 64 elements per batch.
//  - Mask: vpcmpud (bits >= threshold, unsigned) into a k-register; the
//    output is a zero-masked multiply, so dropped elements are +0 (also for
//    NaN or inf input), the same bits as the scalar reference.
//  - Tails and unaligned starts take the word path of dropout_batches.

namespace slimgrad::kernels {
namespace {

// Eight Philox blocks in the eight 64-bit lanes of each of c0..c3: only the
// low 32 bits of a lane are the counter word. vpmuludq reads just those, so
// after a round the high halves may hold garbage (the full product stands in
// for its low word, the XORs mix in high bits) without affecting any low word.
struct Lanes8 {
  __m512i c0, c1, c2, c3;
};

inline void philox_round(Lanes8& s, __m512i m0, __m512i m1, __m512i k0, __m512i k1) {
  const __m512i p0 = _mm512_mul_epu32(s.c0, m0);
  const __m512i p1 = _mm512_mul_epu32(s.c2, m1);
  s.c0 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p1, 32), s.c1), k0);
  s.c1 = p1;
  s.c2 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p0, 32), s.c3), k1);
  s.c3 = p0;
}

// The low words of s (blocks j..j+7) in element order: lo = blocks j..j+3, hi = j+4..j+7.
inline void to_elements(const Lanes8& s, __m512i& lo, __m512i& hi) {
  const __m512i w01 = _mm512_mask_blend_epi32(0xAAAA, s.c0, _mm512_slli_epi64(s.c1, 32));
  const __m512i w23 = _mm512_mask_blend_epi32(0xAAAA, s.c2, _mm512_slli_epi64(s.c3, 32));
  const __m512i even = _mm512_unpacklo_epi64(w01, w23);  // blocks j, j+2, j+4, j+6 (one per 128 bits)
  const __m512i odd = _mm512_unpackhi_epi64(w01, w23);   // blocks j+1, j+3, j+5, j+7
  // qword indices: 0-7 from even, 8-15 from odd
  lo = _mm512_permutex2var_epi64(even, _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0), odd);
  hi = _mm512_permutex2var_epi64(even, _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4), odd);
}

struct Philox16 {
  static constexpr std::size_t kBlocks = 16, kElems = 64;
  std::uint64_t seed, stream;
  std::uint32_t threshold;

  // r[k] = the words of elements 16k .. 16k+15 of blocks b0 .. b0+15.
  void generate(std::uint64_t b0, __m512i r[4]) const {
    const __m512i first =
        _mm512_add_epi64(_mm512_set1_epi64(static_cast<long long>(b0)), _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    const __m512i second = _mm512_add_epi64(first, _mm512_set1_epi64(8));
    const __m512i s_lo = _mm512_set1_epi64(static_cast<long long>(stream));
    const __m512i s_hi = _mm512_set1_epi64(static_cast<long long>(stream >> 32));
    Lanes8 a{first, _mm512_srli_epi64(first, 32), s_lo, s_hi};
    Lanes8 b{second, _mm512_srli_epi64(second, 32), s_lo, s_hi};
    std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
    const __m512i m0 = _mm512_set1_epi32(static_cast<int>(philox::kMul0));
    const __m512i m1 = _mm512_set1_epi32(static_cast<int>(philox::kMul1));
    for (int round = 0; round < philox::kRounds; ++round) {
      if (round > 0) {
        k0 += philox::kWeyl0;
        k1 += philox::kWeyl1;
      }
      const __m512i kv0 = _mm512_set1_epi32(static_cast<int>(k0)), kv1 = _mm512_set1_epi32(static_cast<int>(k1));
      philox_round(a, m0, m1, kv0, kv1);
      philox_round(b, m0, m1, kv0, kv1);
    }
    to_elements(a, r[0], r[1]);
    to_elements(b, r[2], r[3]);
  }

  void words(std::uint64_t b0, std::uint32_t* w) const {
    __m512i r[4];
    generate(b0, r);
    for (int k = 0; k < 4; ++k) _mm512_storeu_si512(w + 16 * k, r[k]);
  }

  __mmask16 keep(__m512i bits) const {
    return _mm512_cmpge_epu32_mask(bits, _mm512_set1_epi32(static_cast<int>(threshold)));
  }

  void apply(const float* x, float* out, std::uint64_t b0, float scale) const {
    __m512i r[4];
    generate(b0, r);
    const __m512 s = _mm512_set1_ps(scale);
    for (int k = 0; k < 4; ++k)
      _mm512_storeu_ps(out + 16 * k, _mm512_maskz_mul_ps(keep(r[k]), _mm512_loadu_ps(x + 16 * k), s));
  }

  void apply(const double* x, double* out, std::uint64_t b0, double scale) const {
    __m512i r[4];
    generate(b0, r);
    const __m512d s = _mm512_set1_pd(scale);
    for (int k = 0; k < 4; ++k) {
      const __mmask16 m = keep(r[k]);
      _mm512_storeu_pd(out + 16 * k, _mm512_maskz_mul_pd(static_cast<__mmask8>(m), _mm512_loadu_pd(x + 16 * k), s));
      _mm512_storeu_pd(out + 16 * k + 8,
                       _mm512_maskz_mul_pd(static_cast<__mmask8>(m >> 8), _mm512_loadu_pd(x + 16 * k + 8), s));
    }
  }
};

}  // namespace

template <>
void dropout<Isa::avx512, float>(const float* x, float* out, std::size_t n, std::uint64_t first,
                                 std::uint64_t seed, std::uint64_t stream, std::uint32_t threshold, float scale) {
  dropout_batches(Philox16{seed, stream, threshold}, x, out, n, first, scale);
}
template <>
void dropout<Isa::avx512, double>(const double* x, double* out, std::size_t n, std::uint64_t first,
                                  std::uint64_t seed, std::uint64_t stream, std::uint32_t threshold, double scale) {
  dropout_batches(Philox16{seed, stream, threshold}, x, out, n, first, scale);
}
}  // namespace slimgrad::kernels

#elif defined(__AVX2__)
// avx2: dropout with Philox-4x32-10 in 8 lanes.
//  - Philox: two sets of four blocks, one block per 64-bit lane, so each
//    32x32->64 multiply is one vpmuludq and its high word one shift. The
//    4 words x 8 blocks are interleaved (blend, unpack, permute2x128) into
//    element order: 32 elements per batch.
//  - Mask: keep = (bits >= threshold) as unsigned, i.e. max_epu32(bits, t) == bits;
//    the output is (x * scale) AND keep, so dropped elements are +0 (also
//    for NaN or inf input); the scalar reference gives the same bits.
//  - Tails and unaligned starts take the word path of dropout_batches.

namespace slimgrad::kernels {
namespace {

// Four Philox blocks in the four 64-bit lanes of each of c0..c3: only the
// low 32 bits of a lane are the counter word. vpmuludq reads just those, so
// after a round the high halves may hold garbage (the full product stands in
// for its low word, the XORs mix in high bits) without affecting any low word.
struct Lanes4 {
  __m256i c0, c1, c2, c3;
};

inline void philox_round(Lanes4& s, __m256i m0, __m256i m1, __m256i k0, __m256i k1) {
  const __m256i p0 = _mm256_mul_epu32(s.c0, m0);
  const __m256i p1 = _mm256_mul_epu32(s.c2, m1);
  s.c0 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p1, 32), s.c1), k0);
  s.c1 = p1;
  s.c2 = _mm256_xor_si256(_mm256_xor_si256(_mm256_srli_epi64(p0, 32), s.c3), k1);
  s.c3 = p0;
}

// The low words of s (blocks j..j+3) in element order: lo = blocks j, j+1; hi = j+2, j+3.
inline void to_elements(const Lanes4& s, __m256i& lo, __m256i& hi) {
  const __m256i w01 = _mm256_blend_epi32(s.c0, _mm256_slli_epi64(s.c1, 32), 0xAA);
  const __m256i w23 = _mm256_blend_epi32(s.c2, _mm256_slli_epi64(s.c3, 32), 0xAA);
  const __m256i even = _mm256_unpacklo_epi64(w01, w23);  // blocks j | j+2
  const __m256i odd = _mm256_unpackhi_epi64(w01, w23);   // blocks j+1 | j+3
  lo = _mm256_permute2x128_si256(even, odd, 0x20);
  hi = _mm256_permute2x128_si256(even, odd, 0x31);
}

struct Philox8 {
  static constexpr std::size_t kBlocks = 8, kElems = 32;
  std::uint64_t seed, stream;
  std::uint32_t threshold;

  // r[k] = the words of elements 8k .. 8k+7 of blocks b0 .. b0+7.
  void generate(std::uint64_t b0, __m256i r[4]) const {
    const __m256i first = _mm256_add_epi64(_mm256_set1_epi64x(static_cast<long long>(b0)), _mm256_set_epi64x(3, 2, 1, 0));
    const __m256i second = _mm256_add_epi64(first, _mm256_set1_epi64x(4));
    const __m256i s_lo = _mm256_set1_epi64x(static_cast<long long>(stream));
    const __m256i s_hi = _mm256_set1_epi64x(static_cast<long long>(stream >> 32));
    Lanes4 a{first, _mm256_srli_epi64(first, 32), s_lo, s_hi};
    Lanes4 b{second, _mm256_srli_epi64(second, 32), s_lo, s_hi};
    std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
    const __m256i m0 = _mm256_set1_epi32(static_cast<int>(philox::kMul0));
    const __m256i m1 = _mm256_set1_epi32(static_cast<int>(philox::kMul1));
    for (int round = 0; round < philox::kRounds; ++round) {
      if (round > 0) {
        k0 += philox::kWeyl0;
        k1 += philox::kWeyl1;
      }
      const __m256i kv0 = _mm256_set1_epi32(static_cast<int>(k0)), kv1 = _mm256_set1_epi32(static_cast<int>(k1));
      philox_round(a, m0, m1, kv0, kv1);
      philox_round(b, m0, m1, kv0, kv1);
    }
    to_elements(a, r[0], r[1]);
    to_elements(b, r[2], r[3]);
  }

  void words(std::uint64_t b0, std::uint32_t* w) const {
    __m256i r[4];
    generate(b0, r);
    for (int k = 0; k < 4; ++k) _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + 8 * k), r[k]);
  }

  __m256i keep(__m256i bits) const {
    const __m256i t = _mm256_set1_epi32(static_cast<int>(threshold));
    return _mm256_cmpeq_epi32(_mm256_max_epu32(bits, t), bits);
  }

  void apply(const float* x, float* out, std::uint64_t b0, float scale) const {
    __m256i r[4];
    generate(b0, r);
    const __m256 s = _mm256_set1_ps(scale);
    for (int k = 0; k < 4; ++k) {
      const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), s);
      _mm256_storeu_ps(out + 8 * k, _mm256_and_ps(v, _mm256_castsi256_ps(keep(r[k]))));
    }
  }

  void apply(const double* x, double* out, std::uint64_t b0, double scale) const {
    __m256i r[4];
    generate(b0, r);
    const __m256d s = _mm256_set1_pd(scale);
    for (int k = 0; k < 4; ++k) {
      const __m256i m = keep(r[k]);
      const __m256d lo = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(m)));
      const __m256d hi = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(m, 1)));
      const __m256d v0 = _mm256_mul_pd(_mm256_loadu_pd(x + 8 * k), s);
      const __m256d v1 = _mm256_mul_pd(_mm256_loadu_pd(x + 8 * k + 4), s);
      _mm256_storeu_pd(out + 8 * k, _mm256_and_pd(v0, lo));
      _mm256_storeu_pd(out + 8 * k + 4, _mm256_and_pd(v1, hi));
    }
  }
};

}  // namespace

template <>
void dropout<Isa::avx2, float>(const float* x, float* out, std::size_t n, std::uint64_t first, std::uint64_t seed,
                               std::uint64_t stream, std::uint32_t threshold, float scale) {
  dropout_batches(Philox8{seed, stream, threshold}, x, out, n, first, scale);
}
template <>
void dropout<Isa::avx2, double>(const double* x, double* out, std::size_t n, std::uint64_t first,
                                std::uint64_t seed, std::uint64_t stream, std::uint32_t threshold, double scale) {
  dropout_batches(Philox8{seed, stream, threshold}, x, out, n, first, scale);
}
}  // namespace slimgrad::kernels
#endif
