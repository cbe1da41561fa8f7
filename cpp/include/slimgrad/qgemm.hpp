// Quantized GEMM with dynamic int8 activations (W8A8, W4A8, GGUF Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1 and the K-quants Q2_K..Q6_K): y = x @ W.T for float32 x
// (M x K) and a weight W (N x K) held as signed integer codes c with, per
// (row n of W, group g of K), a float32 scale and optionally a float32 shift
// and a code offset zoff shared by the weight:
//   W[n, k] = scale[n, g] * (c[n, k] + zoff) + shift[n, g]
// (asymmetric formats: Q4_1's d * q + m, Q4_K's d * sc * q - dmin * m; the
// 4-bit path stores q - 8 with zoff = 8 so the codes stay in [-8, 7]).
// K-quants keep their super-blocks: with sub > 1 groups per super-block,
// scale[n, g] = fl(d[n, g / sub] * float(iscale[n, g])) and likewise the
// shift from ishift, with int8 sub-scales / sub-mins per group and one float
// per super-block (exact products for GGUF's fp16 d and <= 8-bit scales).
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
//  - with zoff or shift, the exact sum of the row's codes over the group,
//    qs = sum_k q[t, k] (ggml's q8_1 / q8_K block sums), and s += zoff * qs;
//  - acc = fma(float(s), scale[n, g], acc), then (with a shift)
//    acc = fma(float(qs), shift[n, g], acc), over the groups in order
//    (float32, acc starting at 0); y[t, n] = acc * xs[t] (+ bias[n]).
//
// Packed weight (made once by qgemm_pack): strips of 16 output rows; per
// strip, K in steps of 4 (8-bit codes: 64 bytes = 16 rows x 4 consecutive k)
// or 8 (4-bit: 64 bytes, low nibble = k..k+3, high nibble = k+4..k+7, each
// stored as code + 8); 5 and 6 bits (codes + 16 / 32): blocks of 8 k, the
// low nibbles as 4 bits, then per high bit two 64-bit masks (80 / 96 bytes
// per block, bit i of a mask <-> byte i of the nibble vector); then per strip and group 16 float scales (and 16
// float shifts; with sub > 1: per super-block 16 floats, per group 16 int8
// sub-scales / sub-mins). VNNI takes the weights as the unsigned operand (bytes
// xor 0x80 = code + 128, nibbles = code + 8) and corrects with the group's
// activation sum: no per-weight compensation is stored.
// Rows past N and k past K are zero codes (scale 0): they add nothing.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

namespace qgemm {
constexpr std::size_t kStrip = 16;          // output rows per strip (one zmm of int32)
constexpr std::size_t kMaxGroup = 65536;    // K per int32 sum: 128 * 127 * 65536 < 2**31 (VNNI sums wrap, end exact)
constexpr std::size_t kStripBlock = 2;      // strips per micro-kernel tile (32 outputs)
constexpr std::size_t kTileRows = 4;        // rows of x per micro-kernel tile
// Up to this many rows of x, 4- to 6-bit codes are split in registers in
// every tile; beyond, once per 32-output panel into bytes. Measured (4096 x
// 4096, 1 thread, min of 15, load ~10): splitting in registers was 1.2-2x
// faster at 5-16 rows for Q4_K / Q5_K, the panel faster from 32 rows on.
constexpr std::size_t kWidenRows = 16;
// The same for the madd path (AVX2), whose tiles take 2 rows of x: bytes
// from 3 rows on (at 3 and 4 rows as fast or faster for every format, Q6_K
// 2.0-2.8 -> 1.5-1.6 ms on 4096 x 4096).
constexpr std::size_t kWidenMaddRows = 2;
// The integer dot product of the micro-kernels (qgemm_strips): vpmaddubsw
// (avx2, plain avx512), vpdpbusd (avx512_vnni) or AMX tiles (amx).
enum class Dot { madd, vnni, amx };

struct Packed {
  int bits = 8;                      // 8: codes in [-127, 127]; 4 / 5 / 6: [-8, 7] / [-16, 15] / [-32, 31]
  std::size_t n = 0, k = 0;          // W is n x k
  std::size_t kpad = 0;              // k rounded up to 4 (8 bits) or 8 (4, 5, 6 bits)
  std::size_t group = 0;             // k per scale (multiple of 4 / 8), the last group may be shorter
  std::size_t n_groups = 0;          // ceil(kpad / group)
  std::size_t strips = 0;            // ceil(n / 16)
  const std::uint8_t* w = nullptr;   // strips * strip_bytes()
  const float* scale = nullptr;      // strips * (n_groups / sub) * 16
  const float* shift = nullptr;      // strips * (n_groups / sub) * 16, or null (symmetric formats)
  int zoff = 0;                      // added to every code (see above)
  std::size_t sub = 1;               // groups per super-block (K-quants), else 1
  const std::int8_t* iscale = nullptr;  // strips * n_groups * 16 when sub > 1
  const std::int8_t* ishift = nullptr;  // strips * n_groups * 16 when sub > 1 with a shift
  bool needs_qsum() const { return shift != nullptr || zoff != 0 || bits == 5 || bits == 6; }
  std::size_t strip_bytes() const { return kpad * kStrip * static_cast<std::size_t>(bits) / 8; }
};

// Whether AMX tiles beat VNNI for m rows of x with this weight. Measured on
// 4096 x 4096 and all-MiniLM-L6-v2's shapes (1536 x 384, 384 x 1536,
// 384 x 384), 2 threads, Xeon "Emerald Rapids" (docs/quant.md):
//  - groups: one, or a multiple of 128 k (64 for 8-bit codes). Each group's
//    sums leave the tiles through memory into a float epilogue; with 32-k
//    groups that costs more than the tiles save (0.7-1.0x VNNI).
//  - 8-bit codes from 8 rows (a tile holds 16): 4096 x 4096 1.4x at 8 rows,
//    2.3x at 16; below 8, 0.6-1.0x on most shapes.
//  - 4-bit codes are widened to bytes per pair of strips first: from
//    32 rows and k >= 1024 (1.2-1.4x); at k = 384 0.94-0.99x.
// Taken by W8A8 and W4A8 weights (symmetric 8- and 4-bit codes, one float
// scale per group); the GGUF formats' 32-k blocks stay on VNNI.
inline bool amx_pays(const Packed& p, std::size_t m) {
  if ((p.bits != 8 && p.bits != 4) || p.shift || p.sub != 1) return false;
  const bool groups = p.n_groups == 1 || p.group % 128 == 0 || (p.bits == 8 && p.group % 64 == 0);
  return groups && (p.bits == 8 ? m >= 8 : m >= 32 && p.kpad >= 1024);
}

// Sizes of the packed arrays for a weight n x k with `group` k per scale.
std::size_t packed_kpad(int bits, std::size_t k);
std::size_t packed_groups(int bits, std::size_t k, std::size_t group);

// A weight to pack, row-major (ranges and shapes checked by the caller).
struct Source {
  int bits = 8;
  const std::int8_t* codes = nullptr;   // n x k: 8 bits [-127, 127], 4 bits [-8, 7]
  std::size_t n = 0, k = 0, group = 0, sub = 1;
  const float* scale = nullptr;         // n x ceil(k / group), or n x (k / group / sub) when sub > 1
  const float* shift = nullptr;         // the same shape, or null
  const std::int8_t* iscale = nullptr;  // n x (k / group) when sub > 1
  const std::int8_t* ishift = nullptr;  // n x (k / group) when sub > 1 with a shift
};
// Writes w, pscale (and pshift, piscale, pishift when the source has them).
void pack(const Source& src, std::uint8_t* w, float* pscale, float* pshift, std::int8_t* piscale,
          std::int8_t* pishift);

// y (m x n, float32) = x (m x k) @ W.T (+ bias when not null), the definitions above.
void gemm(const float* x, std::size_t m, const Packed& p, const float* bias, float* y);
}  // namespace qgemm

namespace kernels {
// Quantizes rows [r0, r1) of x (stride k) into signed codes q (stride kpad,
// zero-padded), writes xs[r].
template <Isa I>
void qgemm_quantize_rows(const float* x, std::size_t k, std::size_t kpad, std::size_t r0, std::size_t r1,
                         std::int8_t* q, float* xs);
// y rows [0, m), outputs of strips [s0, s1): the micro-kernels. q, xs from
// qgemm_quantize_rows; dot vnni and amx only on avx512 (amx: q holds
// ceil(m / 16) * 16 rows and 64 bytes more, read but not used). qsum:
// m x n_groups sums of the codes per group (needed by vnni, amx and
// p.needs_qsum()), else null.
template <Isa I>
void qgemm_strips(const qgemm::Packed& p, const std::int8_t* q, const float* xs, const std::int32_t* qsum,
                  std::size_t m, std::size_t s0, std::size_t s1, qgemm::Dot dot, const float* bias, float* y);
}  // namespace kernels

}  // namespace slimgrad
