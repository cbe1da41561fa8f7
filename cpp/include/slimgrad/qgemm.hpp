// Quantized GEMM with dynamic int8 activations (W8A8, W4A8, GGUF Q8_0 / Q4_0
// weights): y = x @ W.T for float32 x (M x K) and a weight W (N x K) held as
// signed integer codes with one float32 scale per (row of W, group of K).
//
// Definitions (every ISA computes exactly these, so results are bit-identical
// across ISAs and thread counts):
//  - activations, per row t of x: amax = max |x[t, :]| (float32),
//    xs[t] = amax / 127 (float32 division), inv = 127 / amax,
//    q[t, k] = clamp(round_half_even(x[t, k] * inv), -127, 127); an all-zero
//    row has xs = 0 and q = 0; a row with NaN or inf gets xs = NaN (its
//    outputs are NaN, as in a float product);
//  - per group g of K (the weight's group, or up to kMaxGroup for per-row
//    scales): the exact integer sum s = sum_k q[t, k] * w[n, k] (int32);
//  - acc = fma(float(s), scale[n, g], acc) over the groups in order (float32,
//    acc starting at 0), y[t, n] = acc * xs[t] (+ bias[n]).
//
// Packed weight (made once by qgemm_pack): strips of 16 output rows; per
// strip, K in steps of 4 (8-bit codes: 64 bytes = 16 rows x 4 consecutive k)
// or 8 (4-bit: 64 bytes, low nibble = k..k+3, high nibble = k+4..k+7, each
// stored as code + 8); then per strip and group 16 float scales and 16 int32
// compensations -128 * sum_k w (the start of VNNI's sums: its activations
// are unsigned, x + 128).
// Rows past N and k past K are zero codes (scale 0): they add nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

namespace qgemm {
constexpr std::size_t kStrip = 16;          // output rows per strip (one zmm of int32)
constexpr std::size_t kMaxGroup = 65536;    // K per int32 sum: 255 * 127 * 65536 < 2**31
constexpr std::size_t kStripBlock = 2;      // strips per micro-kernel tile (32 outputs)
constexpr std::size_t kTileRows = 4;        // rows of x per micro-kernel tile

struct Packed {
  int bits = 8;                      // 8: int8 codes in [-127, 127]; 4: codes in [-8, 7]
  std::size_t n = 0, k = 0;          // W is n x k
  std::size_t kpad = 0;              // k rounded up to 4 (8 bits) or 8 (4 bits)
  std::size_t group = 0;             // k per scale (multiple of 4 / 8), the last group may be shorter
  std::size_t n_groups = 0;          // ceil(kpad / group)
  std::size_t strips = 0;            // ceil(n / 16)
  const std::uint8_t* w = nullptr;   // strips * strip_bytes()
  const float* scale = nullptr;      // strips * n_groups * 16
  const std::int32_t* comp = nullptr;  // strips * n_groups * 16: -128 * sum of the group's codes
  std::size_t strip_bytes() const { return kpad * kStrip * static_cast<std::size_t>(bits) / 8; }
};

// Sizes of the packed arrays for a weight n x k with `group` k per scale.
std::size_t packed_kpad(int bits, std::size_t k);
std::size_t packed_groups(int bits, std::size_t k, std::size_t group);

// codes: n x k int8 (8 bits: [-127, 127]; 4 bits: [-8, 7], checked by the
// caller); scale: n x n_groups float32. Writes w, scale and comp of `out`.
void pack(int bits, const std::int8_t* codes, const float* scale, std::size_t n, std::size_t k,
          std::size_t group, std::uint8_t* w, float* pscale, std::int32_t* comp);

// y (m x n, float32) = x (m x k) @ W.T (+ bias when not null), the definitions above.
void gemm(const float* x, std::size_t m, const Packed& p, const float* bias, float* y);
}  // namespace qgemm

namespace kernels {
// Quantizes rows [r0, r1) of x (stride k) into q (stride kpad, zero-padded;
// as x + 128 when unsigned_codes, for vpdpbusd), writes xs[r].
template <Isa I>
void qgemm_quantize_rows(const float* x, std::size_t k, std::size_t kpad, std::size_t r0, std::size_t r1,
                         bool unsigned_codes, std::uint8_t* q, float* xs);
// y rows [0, m), outputs of strips [s0, s1): the micro-kernels. q, xs from
// qgemm_quantize_rows (unsigned_codes = vnni); vnni only on avx512.
template <Isa I>
void qgemm_strips(const qgemm::Packed& p, const std::uint8_t* q, const float* xs, std::size_t m, std::size_t s0,
                  std::size_t s1, bool vnni, const float* bias, float* y);
}  // namespace kernels

}  // namespace slimgrad
