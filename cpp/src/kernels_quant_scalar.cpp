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

}  // namespace slimgrad::kernels
