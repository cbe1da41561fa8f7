// nn kernels for avx512: the BatchNorm kernels of kernels_nn_simd.hpp, and
// dropout with Philox-4x32-10 in 16 lanes.
//  - Philox: lane j computes block b0 + j; vpmuludq on even and (shifted)
//    odd lanes, recombined with a masked blend. The 4 words x 16 blocks are
//    transposed into element order (unpack within 128-bit lanes, then a
//    4x4 transpose of 128-bit lanes with vshufi32x4): 64 elements per batch.
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

inline void mulhilo(__m512i a, __m512i m, __m512i& hi, __m512i& lo) {
  const __m512i even = _mm512_mul_epu32(a, m);
  const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
  hi = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}

struct Philox16 {
  static constexpr std::size_t kBlocks = 16, kElems = 64;
  std::uint64_t seed, stream;
  std::uint32_t threshold;

  // r[k] = the words of elements 16k .. 16k+15 of blocks b0 .. b0+15.
  void generate(std::uint64_t b0, __m512i r[4]) const {
    alignas(64) std::uint32_t lo[16], hi[16];
    for (int j = 0; j < 16; ++j) {
      lo[j] = static_cast<std::uint32_t>(b0 + j);
      hi[j] = static_cast<std::uint32_t>((b0 + j) >> 32);
    }
    __m512i c0 = _mm512_load_si512(lo);
    __m512i c1 = _mm512_load_si512(hi);
    __m512i c2 = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(stream)));
    __m512i c3 = _mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(stream >> 32)));
    std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
    const __m512i m0 = _mm512_set1_epi32(static_cast<int>(philox::kMul0));
    const __m512i m1 = _mm512_set1_epi32(static_cast<int>(philox::kMul1));
    for (int round = 0; round < philox::kRounds; ++round) {
      if (round > 0) {
        k0 += philox::kWeyl0;
        k1 += philox::kWeyl1;
      }
      __m512i hi0, lo0, hi1, lo1;
      mulhilo(c0, m0, hi0, lo0);
      mulhilo(c2, m1, hi1, lo1);
      c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), _mm512_set1_epi32(static_cast<int>(k0)));
      c1 = lo1;
      c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), _mm512_set1_epi32(static_cast<int>(k1)));
      c3 = lo0;
    }
    // Within each 128-bit lane q: u0 = block 4q, u1 = 4q+1, u2 = 4q+2, u3 = 4q+3.
    const __m512i t0 = _mm512_unpacklo_epi32(c0, c1), t1 = _mm512_unpackhi_epi32(c0, c1);
    const __m512i t2 = _mm512_unpacklo_epi32(c2, c3), t3 = _mm512_unpackhi_epi32(c2, c3);
    const __m512i u0 = _mm512_unpacklo_epi64(t0, t2);  // blocks 0, 4, 8, 12
    const __m512i u1 = _mm512_unpackhi_epi64(t0, t2);  // blocks 1, 5, 9, 13
    const __m512i u2 = _mm512_unpacklo_epi64(t1, t3);  // blocks 2, 6, 10, 14
    const __m512i u3 = _mm512_unpackhi_epi64(t1, t3);  // blocks 3, 7, 11, 15
    const __m512i v0 = _mm512_shuffle_i32x4(u0, u1, 0x44);  // blocks 0, 4, 1, 5
    const __m512i v1 = _mm512_shuffle_i32x4(u2, u3, 0x44);  // blocks 2, 6, 3, 7
    const __m512i v2 = _mm512_shuffle_i32x4(u0, u1, 0xEE);  // blocks 8, 12, 9, 13
    const __m512i v3 = _mm512_shuffle_i32x4(u2, u3, 0xEE);  // blocks 10, 14, 11, 15
    r[0] = _mm512_shuffle_i32x4(v0, v1, 0x88);  // blocks 0, 1, 2, 3
    r[1] = _mm512_shuffle_i32x4(v0, v1, 0xDD);  // blocks 4, 5, 6, 7
    r[2] = _mm512_shuffle_i32x4(v2, v3, 0x88);  // blocks 8, 9, 10, 11
    r[3] = _mm512_shuffle_i32x4(v2, v3, 0xDD);  // blocks 12, 13, 14, 15
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

}  // namespace slimgrad::kernels
