// nn kernels for avx512: the BatchNorm kernels of kernels_nn_simd.hpp, and
// dropout with Philox-4x32-10 in 16 lanes.
//  - Philox: two sets of eight blocks, one block per 64-bit lane, so each
//    32x32->64 multiply is one vpmuludq and its high word one shift. The
//    4 words x 16 blocks are interleaved (masked blend, unpack, vpermt2q)
//    into element order: 64 elements per batch.
//  - Mask: vpcmpud (bits >= threshold, unsigned) into a k-register; the
//    output is a zero-masked multiply, so dropped elements are +0 (also for
//    NaN or inf input), the same bits as the scalar reference.
//  - Tails and unaligned starts take the word path of dropout_batches.

// GCC 12's AVX-512 intrinsics pass _mm512_undefined_epi32() as the unused
// merge source, which -Wmaybe-uninitialized reports (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include "kernels_nn_simd.hpp"

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

#define SLIMGRAD_NN_INSTANTIATE(T)                                                                               \
  template void bn_sum<Isa::avx512, T>(const T*, std::size_t, std::size_t, std::size_t, double*);               \
  template void bn_sqdev<Isa::avx512, T>(const T*, std::size_t, std::size_t, std::size_t, const double*,        \
                                         double*);                                                              \
  template void bn_dot<Isa::avx512, T>(const T*, const T*, std::size_t, std::size_t, std::size_t,               \
                                       const double*, double*, double*);                                        \
  template void bn_normalize<Isa::avx512, T>(const T*, T*, std::size_t, std::size_t, std::size_t, const T*,     \
                                             const T*, const T*);                                               \
  template void bn_input_grad<Isa::avx512, T>(const T*, const T*, T*, std::size_t, std::size_t, std::size_t,    \
                                              const T*, const T*, const T*, const T*);
SLIMGRAD_NN_INSTANTIATE(float)
SLIMGRAD_NN_INSTANTIATE(double)
#undef SLIMGRAD_NN_INSTANTIATE
template void gelu_forward_f32<Isa::avx512>(const float*, float*, std::size_t, bool);
template void gelu_backward_f32<Isa::avx512>(const float*, const float*, float*, std::size_t, bool);

}  // namespace slimgrad::kernels
