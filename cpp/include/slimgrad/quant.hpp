// Integer quantization: codes of 2..8 bits per tensor / channel / group,
// GGUF-exact blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) and products on quantized
// weights (weight-only int8 / grouped int4, and int8 x int8 -> int32).
//
// Two layers, the pattern of every area (see core.hpp):
//  - slimgrad::kernels::<fn><Isa>: single-threaded kernels on one contiguous
//    range, one explicit instantiation per ISA file;
//  - slimgrad::quant::<fn>: the entry points: fixed work items (never
//    dependent on the thread count) on the thread pool, dispatched.
//
// Definitions (every ISA computes exactly these, bit for bit):
//   r = x * inv           (float32; inv = 1.0f / scale computed once per group;
//                          x / scale instead when scale < FLT_MIN, so a
//                          subnormal scale never makes inv infinite)
//   q = clamp(round(r + zp), qmin, qmax)   (float32 add, then round)
//   x_hat = scale * (q - zp)               (float32)
// round is half-to-even, half-away-from-zero, or stochastic floor(t + u) with
// u = hash(seed, flat index) / 2^24 in [0, 1). This is torch's
// quantize_per_channel formula (mul by the float32 reciprocal, add the zero
// point, then round), so codes agree with torch for equal scales.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "slimgrad/isa.hpp"

namespace slimgrad {

namespace quant {

enum class Rounding : int { half_even = 0, half_away = 1, stochastic = 2 };
enum class Clip : int { minmax = 0, percentile = 1, mse = 2 };

// How parameters (scale, zero point) map onto the elements of a C-ordered
// tensor viewed as rows x cols (cols = the last axis; packing is per row).
//  - runs:   flat element f uses parameter (f / run) % channels. Per tensor:
//            run = size, channels = 1; per channel along axis k:
//            run = prod(shape[k+1:]), channels = shape[k].
//  - groups: element (r, j) uses parameter r * n_groups + j / group_size,
//            n_groups = ceil(cols / group_size) (the last group is shorter).
enum class Layout : int { runs = 0, groups = 1 };

struct Spec {
  int bits = 8;            // 2..8
  bool symmetric = true;   // signed codes in [-(2^(b-1)-1), 2^(b-1)-1], zp 0;
                           // else unsigned codes in [0, 2^b - 1], integer zp
  std::size_t rows = 0, cols = 0;
  Layout layout = Layout::runs;
  std::size_t run = 1, channels = 1;   // Layout::runs
  std::size_t group_size = 1;          // Layout::groups
  Rounding rounding = Rounding::half_even;
  std::uint64_t seed = 0;
  Clip clip = Clip::minmax;
  double percentile = 99.9;   // Clip::percentile: of |x| (symmetric) or both tails
  int mse_steps = 100;        // Clip::mse: ratios 1, 1 - 1/steps, ... down to mse_min_ratio
  double mse_min_ratio = 0.2;
  bool propagate = false;     // non-finite groups: NaN scale (true) or an error (false)

  std::size_t size() const { return rows * cols; }
  // ceil(cols / group_size) without forming cols + group_size - 1, which wraps
  // to a tiny count when group_size is near 2**64 (a hostile file's spec).
  std::size_t n_groups() const { return cols == 0 ? 0 : (cols - 1) / group_size + 1; }
  std::size_t n_params() const { return layout == Layout::runs ? channels : rows * n_groups(); }
  std::size_t row_bytes() const { return (cols * static_cast<std::size_t>(bits) + 7) / 8; }
  int qmin() const { return symmetric ? -((1 << (bits - 1)) - 1) : 0; }
  int qmax() const { return symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1; }
};

// Quantizes x (rows x cols float32) into data (rows x row_bytes; for 8 bits
// the int8/uint8 codes themselves, else a little-endian bitstream per row:
// code j occupies bits [j*b, (j+1)*b) of the row, bit k of the row being bit
// k % 8 of byte k / 8; signed codes are stored as b-bit two's complement),
// scale and zero_point (n_params each). Returns -1, or the flat index of the
// first NaN/inf when !spec.propagate (then nothing has been written).
std::ptrdiff_t quantize(const float* x, const Spec& spec, float* scale, std::int32_t* zero_point,
                        std::uint8_t* data);
// out (rows x cols) = scale * (code - zero_point).
void dequantize(const std::uint8_t* data, const Spec& spec, const float* scale,
                const std::int32_t* zero_point, float* out);
// Codes of a packed tensor as one byte each (int8 when signed), and back.
void unpack(const std::uint8_t* data, const Spec& spec, std::uint8_t* codes);
void pack(const std::uint8_t* codes, const Spec& spec, std::uint8_t* data);

// Counter-based random numbers for stochastic rounding: element f of a
// tensor gets u = (h >> 8) / 2^24, h = mix32(mix32(lo32(f) + k1) ^ k2), with
// (k1, k2) derived from the seed and hi32(f). Pure 32-bit integer arithmetic,
// so every ISA and thread count draws the same u for the same element.
// Internal linkage: each ISA file compiles its own copy (no ODR trap).
namespace {
// "lowbias32" (C. Wellons), on a std::uint32_t or on simd::U32<I> lanes
// (the SIMD kernels' copy of the same hash).
template <class U>
inline __attribute__((always_inline)) U mix32(U x) {
  x = x ^ (x >> 16);
  x = x * 0x7feb352du;
  x = x ^ (x >> 15);
  x = x * 0x846ca68bu;
  return x ^ (x >> 16);
}
struct StreamKey {
  std::uint32_t k1, k2;
};
inline StreamKey stream_key(std::uint64_t seed, std::uint32_t index_hi) {
  const std::uint32_t a = mix32(static_cast<std::uint32_t>(seed) ^ 0x9e3779b9u);
  const std::uint32_t b = mix32(static_cast<std::uint32_t>(seed >> 32) + a);
  const std::uint32_t c = mix32(index_hi ^ b ^ 0x85ebca6bu);
  return {c, mix32(c + 0xc2b2ae35u)};
}
inline std::uint32_t stream_bits(StreamKey k, std::uint32_t index_lo) {
  return mix32(mix32(index_lo + k.k1) ^ k.k2);
}

// Scale and zero point of one parameter from its (possibly clipped) range
// [lo, hi] and whether all its values are equal (then an exact round trip:
// scale |c| and code +-1, or code 0 with zero point 1). Computed in double,
// rounded once to float; plain IEEE operations (no fma, no std:: calls that
// could be linked from another ISA's file), so every ISA gets the same bits.
struct Param {
  float scale = 1.0f, inv = 1.0f, zp = 0.0f;
  bool use_div = false, bad = false;
};
inline Param make_param(float lo, float hi, bool constant, int qmax_i, bool symmetric) {
  Param p;
  const double qmax = qmax_i;
  if (constant) {
    const float c = lo;
    if (c == 0.0f) {
      p.scale = 1.0f;
    } else if (symmetric || c > 0.0f) {
      p.scale = c < 0.0f ? -c : c;
    } else {
      p.scale = -c;
      p.zp = 1.0f;
    }
  } else if (symmetric) {
    const double a = -static_cast<double>(lo), b = hi;
    const double amax = a > b ? a : b;
    p.scale = static_cast<float>(amax / qmax);
    if (!(p.scale > 0.0f)) p.scale = amax > 0.0 ? 1.40129846e-45f : 1.0f;
  } else {
    const double a = lo < 0.0f ? static_cast<double>(lo) : 0.0, b = hi > 0.0f ? static_cast<double>(hi) : 0.0;
    p.scale = static_cast<float>((b - a) / qmax);
    if (!(p.scale > 0.0f)) p.scale = b > a ? 1.40129846e-45f : 1.0f;
    const double z = __builtin_nearbyint(-a / static_cast<double>(p.scale));
    p.zp = static_cast<float>(z < 0.0 ? 0.0 : (z > qmax ? qmax : z));
  }
  p.inv = 1.0f / p.scale;
  p.use_div = p.scale < 1.17549435e-38f;  // FLT_MIN
  return p;
}

// Quantizes x[0, n) in groups of gs (the loop of kernels::quant_groups, the
// same for every ISA): per group its range (minmax returns the index of the
// first non-finite value, or len), its parameter, then encode(x, len, p,
// qmin, qmax, j, codes) writes its codes. A group holding a non-finite
// value gets scale NaN, zero point 0 and codes 0. Returns the index of the
// first non-finite value, or n.
template <class MinMax, class Encode>
std::size_t quantize_groups(const float* x, std::size_t n, std::size_t gs, int bits, bool symmetric, float* scale,
                            std::int32_t* zero_point, std::uint8_t* codes, MinMax&& minmax, Encode&& encode) {
  const int qmax = symmetric ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  const float fmax = static_cast<float>(qmax), fmin = symmetric ? -fmax : 0.0f;
  std::size_t first = n;
  for (std::size_t g = 0, j = 0; j < n; ++g, j += gs) {
    const std::size_t len = n - j < gs ? n - j : gs;
    float lo, hi;
    const std::size_t k = minmax(x + j, len, &lo, &hi);
    if (k < len) {
      first = first < n ? first : j + k;
      scale[g] = __builtin_nanf("");
      zero_point[g] = 0;
      std::memset(codes + j, 0, len);
      continue;
    }
    const Param p = make_param(lo, hi, lo == hi, qmax, symmetric);
    scale[g] = p.scale;
    zero_point[g] = static_cast<std::int32_t>(p.zp);
    encode(x + j, len, p, fmin, fmax, j, codes + j);
  }
  return first;
}
}  // namespace

}  // namespace quant

namespace kernels {
// Smallest and largest of x[0, n) (n >= 1) and the index of the first NaN or
// inf (n if none; lo/hi are then meaningless).
template <Isa I>
std::size_t quant_minmax(const float* x, std::size_t n, float* lo, float* hi);
// codes[i] = low byte of clamp(round(r + zp), qmin, qmax), r = use_div ?
// x/scale : x*inv; `index` is the flat index of x[0] (stochastic rounding).
template <Isa I>
void quant_codes(const float* x, std::size_t n, float scale, float inv, bool use_div, float zp,
                 float qmin, float qmax, int rounding, std::uint64_t seed, std::uint64_t index,
                 std::uint8_t* codes);
// out[i] = scale * (code - zp), codes read as int8 (is_signed) or uint8.
template <Isa I>
void quant_dequant(const std::uint8_t* codes, bool is_signed, std::size_t n, float scale, float zp,
                   float* out);
// Channels along the last axis: element i uses inv[i] and zp[i] (no
// subnormal scales: the caller routes those through quant_codes), and
// dequantizes with scale[i], zp[i].
template <Isa I>
void quant_codes_cols(const float* x, std::size_t n, const float* inv, const float* zp, float qmin, float qmax,
                      int rounding, std::uint64_t seed, std::uint64_t index, std::uint8_t* codes);
template <Isa I>
void quant_dequant_cols(const std::uint8_t* codes, bool is_signed, std::size_t n, const float* scale,
                        const float* zp, float* out);
// n codes (low `bits` bits of each byte) into ceil(n * bits / 8) bytes.
template <Isa I>
void quant_pack(const std::uint8_t* codes, std::size_t n, int bits, std::uint8_t* out);
// The inverse: n codes, sign-extended to int8 when is_signed.
template <Isa I>
void quant_unpack(const std::uint8_t* in, std::size_t n, int bits, bool is_signed, std::uint8_t* codes);
// Groups of gs consecutive values of x[0, n) (the last may be shorter), all
// in one call: min/max, quant::make_param, codes (one byte each) into codes;
// scale[g] / zero_point[g] per group. `index` is the flat index of x[0].
// Returns the offset of the first NaN/inf (n if none); its group gets a NaN
// scale, zero point 0 and zero codes.
template <Isa I>
std::size_t quant_groups(const float* x, std::size_t n, std::size_t gs, int bits, bool symmetric, int rounding,
                         std::uint64_t seed, std::uint64_t index, float* scale, std::int32_t* zero_point,
                         std::uint8_t* codes);

// GGUF blocks of 32 values, byte for byte what the gguf package's
// gguf.quants.quantize writes (its NumPy float32 steps, in its order; its
// float -> integer casts give 0 for NaN/inf). type: GgufType.
template <Isa I>
void gguf_quantize(int type, const float* x, std::size_t n_blocks, std::uint8_t* out);
template <Isa I>
void gguf_dequantize(int type, const std::uint8_t* in, std::size_t n_blocks, float* out);

// Products on quantized weights W (out x in, codes per row as in Spec, bits 8
// or 4): y[b, r] = sum_j x[b, j] * scale[r, g(j)] * (q[r, j] - zp[r, g(j)]).
struct QMatmulArgs {
  const float* x = nullptr;      // batch x in
  const float* xp = nullptr;     // GEMV: x per group, 32-padded, even-then-odd per chunk for 4 bits
  const float* xsum = nullptr;   // batch x n_groups: sums of x over each group
  std::size_t batch = 0, in = 0, out = 0;
  const std::uint8_t* w = nullptr;
  std::size_t row_bytes = 0;
  int bits = 8;
  bool is_signed = true;
  const float* scale = nullptr;  // scale[r * param_stride + g]
  const std::int32_t* zp = nullptr;
  std::size_t param_stride = 0, n_groups = 1, group_size = 0;
  float* y = nullptr;            // batch x out
};
// Rows [r0, r1) of y. scratch: 64 * in floats (batched path).
template <Isa I>
void qmatmul_rows(const QMatmulArgs& a, std::size_t r0, std::size_t r1, float* scratch);
// From this many rows of a, VNNI packs b by blocks of 64 rows (matmul_s8
// hands the kernel one block per call); fewer take dot products along k.
constexpr std::size_t kS8PanelRows = 4;
// c[m, n] = sum_k a[m, k] * b[n, k] for n in [n0, n1), all m (int32, exact).
// scratch: 4 * K int16 (widened rows of b). bsum[n] = sum_k b[n, k].
// a_tiles: a in quant::S8Tiles's layout for AMX tiles (avx512 unit, level
// amx), else null.
template <Isa I>
void matmul_s8_cols(const std::int8_t* a, std::size_t M, const std::int8_t* b, std::size_t K, std::size_t n0,
                    std::size_t n1, const std::int32_t* bsum, std::int32_t* c, std::size_t N, std::int16_t* scratch,
                    const std::int8_t* a_tiles);
}  // namespace kernels

namespace quant {
// y = x @ W.T for a weight quantized per row (tensor / channel along axis 0 /
// groups along the row) to 8 or 4 bits; x is batch x in. For 4 bits the
// group size must be even (groups start on a byte).
void qmatmul(const float* x, std::size_t batch, const Spec& spec, const std::uint8_t* data, const float* scale,
             const std::int32_t* zero_point, float* y);
// a (M x K) as AMX's second tile operand, for matmul_s8 on level amx: per
// 16 rows of a and per 64 k, 1024 bytes = 16 groups of 4 k, each holding
// the 16 rows' 4 bytes (row-minor); rows past M and k past K are zeros.
// The large operand b is read as it is (tdpbssd's first operand takes rows).
struct S8Tiles {
  static std::size_t kpad(std::size_t K) { return (K + 63) / 64 * 64; }
  static std::size_t bytes(std::size_t M, std::size_t K) { return (M + 15) / 16 * 16 * kpad(K); }
};
// c (M x N, int32) = a (M x K, int8) @ b (N x K, int8).T, exact.
void matmul_s8(const std::int8_t* a, std::size_t M, const std::int8_t* b, std::size_t N, std::size_t K,
               std::int32_t* c);
// Whether the active ISA level includes VNNI (vpdpbusd; level avx512_vnni of
// isa.hpp), used by matmul_s8 on avx512.
bool has_avx512_vnni();

// ------------------------------------------------------- GGUF block formats
// ggml's block layouts (ggml-common.h), little-endian, no padding: d and m
// are float16 bit patterns, qs the low 4 bits (or 8-bit codes), qh the 5th
// bits. The kernels read and write these bytes; static_asserts pin the sizes.
struct BlockQ8_0 {
  std::uint16_t d;
  std::int8_t qs[32];
};
struct BlockQ4_0 {
  std::uint16_t d;
  std::uint8_t qs[16];
};
struct BlockQ4_1 {
  std::uint16_t d, m;
  std::uint8_t qs[16];
};
struct BlockQ5_0 {
  std::uint16_t d;
  std::uint8_t qh[4];
  std::uint8_t qs[16];
};
struct BlockQ5_1 {
  std::uint16_t d, m;
  std::uint8_t qh[4];
  std::uint8_t qs[16];
};

// The traits table: one row per format, X(id, name, ggml_type, block struct).
// From it come GgufType, the sizes below and _core.quant.gguf_formats(),
// which slimgrad.quant.gguf reads (no second copy of the sizes in Python).
// The reference and SIMD code of every row: gguf_quantize/gguf_dequantize
// in kernels_quant_scalar.cpp / kernels_quant_simd.hpp, switched on GgufType.
#define SLIMGRAD_GGUF_FORMATS(X)    \
  X(q8_0, "Q8_0", 8, BlockQ8_0)     \
  X(q4_0, "Q4_0", 2, BlockQ4_0)     \
  X(q4_1, "Q4_1", 3, BlockQ4_1)     \
  X(q5_0, "Q5_0", 6, BlockQ5_0)     \
  X(q5_1, "Q5_1", 7, BlockQ5_1)

#define SLIMGRAD_GGUF_ENUM(id, ...) id,
enum class GgufType : int { SLIMGRAD_GGUF_FORMATS(SLIMGRAD_GGUF_ENUM) };
#undef SLIMGRAD_GGUF_ENUM
inline constexpr std::size_t kGgufBlock = 32;  // values per block, every format

struct GgufFormat {
  const char* name;
  int ggml_type;           // GGMLQuantizationType value in .gguf files
  std::size_t block_size;  // values per block
  std::size_t type_size;   // bytes per block
};
#define SLIMGRAD_GGUF_ROW(id, name, ggml, Block) GgufFormat{name, ggml, kGgufBlock, sizeof(Block)},
inline constexpr GgufFormat kGgufFormats[] = {SLIMGRAD_GGUF_FORMATS(SLIMGRAD_GGUF_ROW)};
#undef SLIMGRAD_GGUF_ROW
inline constexpr std::size_t kGgufFormatCount = sizeof(kGgufFormats) / sizeof(kGgufFormats[0]);

static_assert(sizeof(BlockQ8_0) == 2 + kGgufBlock, "ggml block_q8_0 is 34 bytes");
static_assert(sizeof(BlockQ4_0) == 2 + kGgufBlock / 2, "ggml block_q4_0 is 18 bytes");
static_assert(sizeof(BlockQ4_1) == 4 + kGgufBlock / 2, "ggml block_q4_1 is 20 bytes");
static_assert(sizeof(BlockQ5_0) == 2 + 4 + kGgufBlock / 2, "ggml block_q5_0 is 22 bytes");
static_assert(sizeof(BlockQ5_1) == 4 + 4 + kGgufBlock / 2, "ggml block_q5_1 is 24 bytes");

// Bytes per block of a format.
inline constexpr std::size_t gguf_type_size(GgufType t) { return kGgufFormats[static_cast<int>(t)].type_size; }
// Returns -1, or the flat index of the first NaN/inf (out is then garbage).
std::ptrdiff_t gguf_quantize(GgufType type, const float* x, std::size_t n_blocks, std::uint8_t* out);
void gguf_dequantize(GgufType type, const std::uint8_t* in, std::size_t n_blocks, float* out);
}  // namespace quant

}  // namespace slimgrad
