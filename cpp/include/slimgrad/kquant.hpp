// GGUF K-quants (Q2_K .. Q6_K): super-blocks of 256 values, byte for byte
// what llama.cpp's ggml writes (quantize_row_qN_K_ref without an importance
// matrix, quantize_row_qN_K_impl with one, as ggml_quantize_chunk calls them).
//
// Block layouts (ggml-common.h; all little-endian, fp16 = IEEE binary16):
//   Q2_K  84 B: scales[16] (4-bit scale | 4-bit min << 4), qs[64] (2 bits),
//               d, dmin
//   Q3_K 110 B: hmask[32] (high bits), qs[64] (low 2 bits), scales[12]
//               (16 6-bit scales), d
//   Q4_K 144 B: d, dmin, scales[12] (8 6-bit scales + 8 6-bit mins), qs[128]
//   Q5_K 176 B: d, dmin, scales[12], qh[32] (fifth bits), qs[128]
//   Q6_K 210 B: ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16]
//               (int8), d
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

namespace kquant {

inline constexpr std::size_t kQK = 256;  // values per super-block (ggml's QK_K)

// ggml's type ids (GGMLQuantizationType), so Python passes them through.
enum class KType : int { q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14 };

struct BlockQ2K {
  std::uint8_t scales[kQK / 16];
  std::uint8_t qs[kQK / 4];
  std::uint16_t d, dmin;
};
struct BlockQ3K {
  std::uint8_t hmask[kQK / 8];
  std::uint8_t qs[kQK / 4];
  std::uint8_t scales[12];
  std::uint16_t d;
};
struct BlockQ4K {
  std::uint16_t d, dmin;
  std::uint8_t scales[12];
  std::uint8_t qs[kQK / 2];
};
struct BlockQ5K {
  std::uint16_t d, dmin;
  std::uint8_t scales[12];
  std::uint8_t qh[kQK / 8];
  std::uint8_t qs[kQK / 2];
};
struct BlockQ6K {
  std::uint8_t ql[kQK / 2];
  std::uint8_t qh[kQK / 4];
  std::int8_t scales[kQK / 16];
  std::uint16_t d;
};
static_assert(sizeof(BlockQ2K) == 2 * 2 + kQK / 16 + kQK / 4, "wrong q2_K block size/padding");
static_assert(sizeof(BlockQ3K) == 2 + kQK / 4 + kQK / 8 + 12, "wrong q3_K block size/padding");
static_assert(sizeof(BlockQ4K) == 2 * 2 + 12 + kQK / 2, "wrong q4_K block size/padding");
static_assert(sizeof(BlockQ5K) == 2 * 2 + 12 + kQK / 2 + kQK / 8, "wrong q5_K block size/padding");
static_assert(sizeof(BlockQ6K) == 2 + kQK / 16 + 3 * kQK / 4, "wrong q6_K block size/padding");

inline std::size_t type_size(KType t) {
  switch (t) {
    case KType::q2_k: return sizeof(BlockQ2K);
    case KType::q3_k: return sizeof(BlockQ3K);
    case KType::q4_k: return sizeof(BlockQ4K);
    case KType::q5_k: return sizeof(BlockQ5K);
    case KType::q6_k: return sizeof(BlockQ6K);
  }
  return 0;
}
inline bool valid_type(int t) { return t >= 10 && t <= 14; }

// Quantizes nrows rows of n_per_row values (a multiple of kQK) into
// nrows * n_per_row / kQK blocks. imatrix: null, or n_per_row importance
// weights shared by all rows (llama.cpp's quant_weights). Threads over
// blocks; the bytes do not depend on the thread count or the ISA.
// Returns -1, or the flat index of the first NaN/inf in x (out is then
// partly written).
std::ptrdiff_t quantize(KType type, const float* x, std::size_t nrows, std::size_t n_per_row,
                        const float* imatrix, void* out);
void dequantize(KType type, const void* in, std::size_t n_blocks, float* out);

}  // namespace kquant

namespace kernels {
// n_blocks consecutive super-blocks of one row: x holds 256 * n_blocks
// values, qw null or the importance weights of the same columns.
template <Isa I>
void kquant_quantize(int type, const float* x, std::size_t n_blocks, const float* qw, void* out);
template <Isa I>
void kquant_dequantize(int type, const void* in, std::size_t n_blocks, float* out);
}  // namespace kernels

}  // namespace slimgrad
