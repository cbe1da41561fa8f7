// Scalar pieces of the K-quant quantizers shared by the reference
// (kernels_kquant_scalar.cpp) and the SIMD kernels: the SIMD files compute
// the per-sub-block scale search in vector lanes, then finish each
// super-block (scale quantization, final codes, bit packing) with these
// functions, which are compiled once in the scalar file (-ffp-contract=off,
// baseline ISA). Names follow llama.cpp's ggml-quants.c so the two can be
// read side by side.
#pragma once

#include <cstdint>
#include <cstring>

#include "slimgrad/kquant.hpp"

namespace slimgrad::kernels::kq {

using kquant::BlockQ2K;
using kquant::BlockQ3K;
using kquant::BlockQ4K;
using kquant::BlockQ5K;
using kquant::BlockQ6K;
using kquant::KType;

// ggml's nearest_int: round half to even through the 1.5 * 2^23 trick, valid
// for |f| <= 2^22; outside that (huge or non-finite ratios) it gives the same
// wrapped value as ggml, which is what byte-exactness needs. static: no
// shared symbol between files compiled for different ISAs.
static inline int nearest_int(float f) {
  const float v = f + 12582912.f;
  std::int32_t i;
  std::memcpy(&i, &v, 4);
  return (i & 0x007fffff) - 0x00400000;
}

// IEEE binary16 <-> float exactly as ggml's ggml_compute_fp32_to_fp16 /
// ggml_compute_fp16_to_fp32 (round to nearest even; NaN -> 0x7E00 | sign).
std::uint16_t fp32_to_fp16(float f);
float fp16_to_fp32(std::uint16_t h);

// Q4_K / Q5_K super-block from the sub-block search results: scales[8],
// mins[8] (make_qkx2_quants without an importance matrix, make_qkx3_quants
// with one, then sw[8] are the sub-blocks' weight sums), L[256] the codes of
// that search (kept where a sub-block's scale quantizes to 0).
void q45k_finish(bool five, const float* x, const float* scales, const float* mins, const float* sw,
                 std::uint8_t* L, void* block);
// Q6_K super-block from make_qx_quants' 16 scales and codes L (0..63).
void q6k_finish(const float* x, const float* scales, std::int8_t* L, BlockQ6K* y);
// Q2_K super-block from 16 scales/mins (sw as for q45k_finish).
void q2k_finish(const float* x, const float* scales, const float* mins, const float* sw, std::uint8_t* L,
                BlockQ2K* y);

// Q3_K: the signed 6-bit scale j of the packed scales[12]; packing of one
// (offset) scale l; final codes and bit packing from the packed scales.
int q3k_scale(const std::uint8_t* s, int j);
void q3k_pack_scale(int j, int l, std::uint8_t* s);
void q3k_finish(const float* x, std::int8_t* L, BlockQ3K* y);

// llama.cpp's scale searches (see kernels_kquant_scalar.cpp).
float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L, const float* qw);
float make_q3_quants(int n, int nmax, const float* x, std::int8_t* L);
float make_qkx_quants(int n, int nmax, const float* x, const float* weights, std::uint8_t* L, float* the_min,
                      float rmin, float rdelta, int nstep, bool use_mad);
float make_qp_quants(int n, int nmax, const float* x, std::uint8_t* L, const float* qw);

// Whole super-blocks, plain reference (what the scalar ISA runs).
void quantize_ref(int type, const float* x, std::size_t n_blocks, const float* qw, void* out);
void dequantize_ref(int type, const void* in, std::size_t n_blocks, float* out);

}  // namespace slimgrad::kernels::kq
