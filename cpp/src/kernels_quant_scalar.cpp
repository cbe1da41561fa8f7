// Scalar reference (the oracle) of the quantization kernels: plain loops,
// compiled with -ffp-contract=off, so `x * inv + zp` is a multiply then an
// add, exactly what the SIMD files and torch compute.
//  - rounding: nearbyint (half to even in the default mode), round (half
//    away from zero), floor(t + u) (stochastic, u from quant::stream_bits);
//  - clamping happens in float before the conversion, so huge or infinite
//    ratios saturate instead of overflowing the integer conversion.
#include <cmath>
#include <cstring>

#include "slimgrad/quant.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {

template <>
std::size_t quant_minmax<Isa::scalar>(const float* x, std::size_t n, float* lo, float* hi) {
  float a = x[0], b = x[0];
  for (std::size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return i;
    a = x[i] < a ? x[i] : a;
    b = b < x[i] ? x[i] : b;
  }
  *lo = a;
  *hi = b;
  return n;
}

template <>
void quant_codes<Isa::scalar>(const float* x, std::size_t n, float scale, float inv, bool use_div,
                              float zp, float qmin, float qmax, int rounding, std::uint64_t seed,
                              std::uint64_t index, std::uint8_t* codes) {
  for (std::size_t i = 0; i < n; ++i) {
    const float r = use_div ? x[i] / scale : x[i] * inv;
    float t = r + zp;
    if (rounding == static_cast<int>(quant::Rounding::half_even)) {
      t = std::nearbyint(t);
    } else if (rounding == static_cast<int>(quant::Rounding::half_away)) {
      t = std::round(t);
    } else {
      const std::uint64_t f = index + i;
      const auto key = quant::stream_key(seed, static_cast<std::uint32_t>(f >> 32));
      const float u = static_cast<float>(quant::stream_bits(key, static_cast<std::uint32_t>(f)) >> 8) *
                      5.9604644775390625e-8f;  // 2^-24
      t = std::floor(t + u);
    }
    t = t < qmin ? qmin : t;
    t = qmax < t ? qmax : t;
    codes[i] = static_cast<std::uint8_t>(static_cast<std::int32_t>(t));
  }
}

template <>
void quant_dequant<Isa::scalar>(const std::uint8_t* codes, bool is_signed, std::size_t n, float scale,
                                float zp, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    const float q = is_signed ? static_cast<float>(static_cast<std::int8_t>(codes[i]))
                              : static_cast<float>(codes[i]);
    out[i] = scale * (q - zp);
  }
}

template <>
void quant_codes_cols<Isa::scalar>(const float* x, std::size_t n, const float* inv, const float* zp, float qmin,
                                   float qmax, int rounding, std::uint64_t seed, std::uint64_t index,
                                   std::uint8_t* codes) {
  for (std::size_t i = 0; i < n; ++i)
    quant_codes<Isa::scalar>(x + i, 1, 1.0f / inv[i], inv[i], false, zp[i], qmin, qmax, rounding, seed, index + i,
                             codes + i);
}

template <>
void quant_dequant_cols<Isa::scalar>(const std::uint8_t* codes, bool is_signed, std::size_t n, const float* scale,
                                     const float* zp, float* out) {
  for (std::size_t i = 0; i < n; ++i) quant_dequant<Isa::scalar>(codes + i, is_signed, 1, scale[i], zp[i], out + i);
}

template <>
void quant_pack<Isa::scalar>(const std::uint8_t* codes, std::size_t n, int bits, std::uint8_t* out) {
  if (bits == 8) {
    std::memcpy(out, codes, n);
    return;
  }
  const std::uint32_t mask = (1u << bits) - 1;
  std::size_t byte = 0;
  std::uint32_t acc = 0;  // pending bits, low first
  int have = 0;
  for (std::size_t i = 0; i < n; ++i) {
    acc |= (codes[i] & mask) << have;
    have += bits;
    while (have >= 8) {
      out[byte++] = static_cast<std::uint8_t>(acc);
      acc >>= 8;
      have -= 8;
    }
  }
  if (have > 0) out[byte] = static_cast<std::uint8_t>(acc);
}

template <>
void quant_unpack<Isa::scalar>(const std::uint8_t* in, std::size_t n, int bits, bool is_signed,
                               std::uint8_t* codes) {
  if (bits == 8) {
    std::memcpy(codes, in, n);
    return;
  }
  const std::uint32_t mask = (1u << bits) - 1;
  std::size_t byte = 0;
  std::uint32_t acc = 0;
  int have = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (have < bits) {
      acc |= static_cast<std::uint32_t>(in[byte++]) << have;
      have += 8;
    }
    std::uint32_t c = acc & mask;
    acc >>= bits;
    have -= bits;
    if (is_signed && (c >> (bits - 1))) c |= ~mask;  // sign-extend the b-bit field
    codes[i] = static_cast<std::uint8_t>(c);
  }
}

template <>
std::size_t quant_groups<Isa::scalar>(const float* x, std::size_t n, std::size_t gs, int bits, bool symmetric,
                                      int rounding, std::uint64_t seed, std::uint64_t index, float* scale,
                                      std::int32_t* zero_point, std::uint8_t* codes) {
  return quant::quantize_groups(
      x, n, gs, bits, symmetric, scale, zero_point, codes,
      [](const float* v, std::size_t len, float* lo, float* hi) {
        return quant_minmax<Isa::scalar>(v, len, lo, hi);
      },
      [&](const float* v, std::size_t len, const quant::Param& p, float qmin, float qmax, std::size_t j,
          std::uint8_t* c) {
        quant_codes<Isa::scalar>(v, len, p.scale, p.inv, p.use_div, p.zp, qmin, qmax, rounding, seed, index + j, c);
      });
}

}  // namespace slimgrad::kernels

// ---------------------------------------------------------------- GGUF
// The gguf package's quantizers in NumPy float32, step by step:
//   Q8_0: d = amax / 127; id = d == 0 ? 0 : 1 / d; q = np_roundf(x * id)
//         (half away from zero: floor(a) + floor(2 (a - floor(a))), signed);
//   Q4_0: m = the signed value of the first largest |x|; d = m / -8;
//         q = trunc(x * id + 8.5) as uint8, clipped to 15 (Q5_0: -16, 16.5, 31);
//   Q4_1: d = (max - min) / 15; q = trunc((x - min) * id + 0.5), clip 15
//         (Q5_1: 31);
// then d (and min) rounded to float16. NumPy's float -> int8/uint8 casts
// give 0 for NaN and inf (reached when 1 / d overflows for tiny blocks, or
// max - min overflows for huge ones): cast_code reproduces that.
namespace slimgrad::kernels {
namespace {

inline std::uint8_t cast_code(float v) {
  return __builtin_isfinite(v) ? static_cast<std::uint8_t>(static_cast<std::int32_t>(v)) : 0;
}


inline void put_half(std::uint8_t* p, float v) {
  const std::uint16_t h = simd::float_to_half(v);
  std::memcpy(p, &h, 2);
}
inline float get_half(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return simd::half_to_float(h);
}

void gguf_block(int type, const float* x, std::uint8_t* out) {
  std::uint8_t q[32];
  const auto t = static_cast<quant::GgufType>(type);
  if (t == quant::GgufType::q8_0) {
    float amax = 0.0f;
    for (int i = 0; i < 32; ++i) amax = std::fabs(x[i]) > amax ? std::fabs(x[i]) : amax;
    const float d = amax / 127.0f;
    const float id = d == 0.0f ? 0.0f : 1.0f / d;
    put_half(out, d);
    for (int i = 0; i < 32; ++i) {
      const float v = x[i] * id;
      out[2 + i] = __builtin_isfinite(v) ? static_cast<std::uint8_t>(static_cast<std::int32_t>(std::round(v))) : 0;
    }
    return;
  }
  if (t == quant::GgufType::q4_0 || t == quant::GgufType::q5_0) {
    int imax = 0;
    for (int i = 1; i < 32; ++i)
      if (std::fabs(x[i]) > std::fabs(x[imax])) imax = i;
    const bool five = t == quant::GgufType::q5_0;
    const float d = x[imax] / (five ? -16.0f : -8.0f);
    const float id = d == 0.0f ? 0.0f : 1.0f / d;
    const float bias = five ? 16.5f : 8.5f;
    const std::uint8_t top = five ? 31 : 15;
    for (int i = 0; i < 32; ++i) {
      const std::uint8_t c = cast_code(std::trunc(x[i] * id + bias));
      q[i] = c < top ? c : top;
    }
    put_half(out, d);
    out += 2;
  } else {
    float mn = x[0], mx = x[0];
    for (int i = 1; i < 32; ++i) {
      mn = x[i] < mn ? x[i] : mn;
      mx = x[i] > mx ? x[i] : mx;
    }
    const bool five = t == quant::GgufType::q5_1;
    const float d = (mx - mn) / (five ? 31.0f : 15.0f);
    const float id = d == 0.0f ? 0.0f : 1.0f / d;
    const std::uint8_t top = five ? 31 : 15;
    for (int i = 0; i < 32; ++i) {
      const std::uint8_t c = cast_code(std::trunc((x[i] - mn) * id + 0.5f));
      q[i] = c < top ? c : top;
    }
    put_half(out, d);
    put_half(out + 2, mn);
    out += 4;
  }
  if (t == quant::GgufType::q5_0 || t == quant::GgufType::q5_1) {
    std::uint32_t qh = 0;
    for (int i = 0; i < 32; ++i) qh |= static_cast<std::uint32_t>(q[i] >> 4) << i;
    for (int k = 0; k < 4; ++k) out[k] = static_cast<std::uint8_t>(qh >> (8 * k));
    out += 4;
  }
  for (int j = 0; j < 16; ++j) out[j] = static_cast<std::uint8_t>((q[j] & 0x0F) | (q[j + 16] << 4));
}

void gguf_unblock(int type, const std::uint8_t* in, float* x) {
  const auto t = static_cast<quant::GgufType>(type);
  const float d = get_half(in);
  if (t == quant::GgufType::q8_0) {
    for (int i = 0; i < 32; ++i) x[i] = d * static_cast<float>(static_cast<std::int8_t>(in[2 + i]));
    return;
  }
  const bool affine = t == quant::GgufType::q4_1 || t == quant::GgufType::q5_1;
  const bool five = t == quant::GgufType::q5_0 || t == quant::GgufType::q5_1;
  const float m = affine ? get_half(in + 2) : 0.0f;
  const std::uint8_t* p = in + (affine ? 4 : 2);
  std::uint32_t qh = 0;
  if (five) {
    for (int k = 0; k < 4; ++k) qh |= static_cast<std::uint32_t>(p[k]) << (8 * k);
    p += 4;
  }
  for (int i = 0; i < 32; ++i) {
    int c = i < 16 ? (p[i] & 0x0F) : (p[i - 16] >> 4);
    if (five) c |= static_cast<int>((qh >> i) & 1u) << 4;
    if (affine)
      x[i] = d * static_cast<float>(c) + m;
    else
      x[i] = d * static_cast<float>(c - (five ? 16 : 8));
  }
}

}  // namespace

template <>
void gguf_quantize<Isa::scalar>(int type, const float* x, std::size_t n_blocks, std::uint8_t* out) {
  const std::size_t ts = quant::gguf_type_size(static_cast<quant::GgufType>(type));
  for (std::size_t b = 0; b < n_blocks; ++b) gguf_block(type, x + 32 * b, out + ts * b);
}

template <>
void gguf_dequantize<Isa::scalar>(int type, const std::uint8_t* in, std::size_t n_blocks, float* out) {
  const std::size_t ts = quant::gguf_type_size(static_cast<quant::GgufType>(type));
  for (std::size_t b = 0; b < n_blocks; ++b) gguf_unblock(type, in + ts * b, out + 32 * b);
}

}  // namespace slimgrad::kernels
