// nn kernels for avx2: the BatchNorm kernels of kernels_nn_simd.hpp, and
// dropout with Philox-4x32-10 in 8 lanes.
//  - Philox: lane j computes block b0 + j; the 32x32->64 multiplies use
//    vpmuludq on the even and (shifted) odd lanes, recombined with vpblendd.
//    The 4 output words x 8 blocks are transposed (unpack + permute2x128)
//    into element order: 32 elements per batch.
//  - Mask: keep = (bits >= threshold) as unsigned, i.e. max_epu32(bits, t) == bits;
//    the output is (x * scale) AND keep, so dropped elements are +0 (also
//    for NaN or inf input); the scalar reference gives the same bits.
//  - Tails and unaligned starts take the word path of dropout_batches.
#include "kernels_nn_simd.hpp"

namespace slimgrad::kernels {
namespace {

inline void mulhilo(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

struct Philox8 {
  static constexpr std::size_t kBlocks = 8, kElems = 32;
  std::uint64_t seed, stream;
  std::uint32_t threshold;

  // r[k] = the words of elements 8k .. 8k+7 of blocks b0 .. b0+7.
  void generate(std::uint64_t b0, __m256i r[4]) const {
    alignas(32) std::uint32_t lo[8], hi[8];
    for (int j = 0; j < 8; ++j) {
      lo[j] = static_cast<std::uint32_t>(b0 + j);
      hi[j] = static_cast<std::uint32_t>((b0 + j) >> 32);
    }
    __m256i c0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(lo));
    __m256i c1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(hi));
    __m256i c2 = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(stream)));
    __m256i c3 = _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(stream >> 32)));
    std::uint32_t k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
    const __m256i m0 = _mm256_set1_epi32(static_cast<int>(philox::kMul0));
    const __m256i m1 = _mm256_set1_epi32(static_cast<int>(philox::kMul1));
    for (int round = 0; round < philox::kRounds; ++round) {
      if (round > 0) {
        k0 += philox::kWeyl0;
        k1 += philox::kWeyl1;
      }
      __m256i hi0, lo0, hi1, lo1;
      mulhilo(c0, m0, hi0, lo0);
      mulhilo(c2, m1, hi1, lo1);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c3 = lo0;
    }
    // c0..c3 hold word 0..3 of blocks 0..7; interleave to block-major order.
    const __m256i t0 = _mm256_unpacklo_epi32(c0, c1), t1 = _mm256_unpackhi_epi32(c0, c1);
    const __m256i t2 = _mm256_unpacklo_epi32(c2, c3), t3 = _mm256_unpackhi_epi32(c2, c3);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2);  // blocks 0 | 4
    const __m256i u1 = _mm256_unpackhi_epi64(t0, t2);  // blocks 1 | 5
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3);  // blocks 2 | 6
    const __m256i u3 = _mm256_unpackhi_epi64(t1, t3);  // blocks 3 | 7
    r[0] = _mm256_permute2x128_si256(u0, u1, 0x20);
    r[1] = _mm256_permute2x128_si256(u2, u3, 0x20);
    r[2] = _mm256_permute2x128_si256(u0, u1, 0x31);
    r[3] = _mm256_permute2x128_si256(u2, u3, 0x31);
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

#define SLIMGRAD_NN_INSTANTIATE(T)                                                                             \
  template void bn_sum<Isa::avx2, T>(const T*, std::size_t, std::size_t, std::size_t, double*);               \
  template void bn_sqdev<Isa::avx2, T>(const T*, std::size_t, std::size_t, std::size_t, const double*,        \
                                       double*);                                                              \
  template void bn_dot<Isa::avx2, T>(const T*, const T*, std::size_t, std::size_t, std::size_t, const double*, \
                                     double*, double*);                                                       \
  template void bn_normalize<Isa::avx2, T>(const T*, T*, std::size_t, std::size_t, std::size_t, const T*,     \
                                           const T*, const T*);                                               \
  template void bn_input_grad<Isa::avx2, T>(const T*, const T*, T*, std::size_t, std::size_t, std::size_t,    \
                                            const T*, const T*, const T*, const T*);
SLIMGRAD_NN_INSTANTIATE(float)
SLIMGRAD_NN_INSTANTIATE(double)
#undef SLIMGRAD_NN_INSTANTIATE

}  // namespace slimgrad::kernels
