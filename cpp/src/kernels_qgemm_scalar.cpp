// Scalar reference of the int8-activation GEMM (qgemm.hpp): plain loops
// that compute the definitions of qgemm.hpp literally (the code offset and
// shift of the asymmetric formats through the activation group sums). The
// SIMD units agree bit for bit, VNNI's unsigned weights included, because
// every group sum is an exact int32. Rounding: nearbyint
// (half to even, the default mode), one std::fma per group, then * xs, + bias.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "slimgrad/qgemm.hpp"

namespace slimgrad::kernels {
namespace {

int weight_code(const qgemm::Packed& p, std::size_t s, std::size_t c, std::size_t k) {
  const std::uint8_t* strip = p.w + s * p.strip_bytes();
  if (p.bits == 8) return static_cast<std::int8_t>(strip[(k / 4) * 64 + c * 4 + k % 4]);
  if (p.bits == 5 || p.bits == 6) {  // nibble + bit planes (qgemm.hpp), stored as code + 16 / 32
    const std::uint8_t* blk = strip + (k / 8) * (64 + 16 * static_cast<std::size_t>(p.bits - 4));
    const std::size_t bi = c * 4 + k % 4;
    const bool high = k % 8 >= 4;
    int u = high ? blk[bi] >> 4 : blk[bi] & 0x0F;
    for (int b = 0; b < p.bits - 4; ++b) u |= ((blk[64 + 16 * b + (high ? 8 : 0) + bi / 8] >> (bi % 8)) & 1) << (4 + b);
    return u - (1 << (p.bits - 1));
  }
  const std::uint8_t byte = strip[(k / 8) * 64 + c * 4 + k % 4];
  return ((k % 8 < 4) ? (byte & 0x0F) : (byte >> 4)) - 8;
}

// scale (or shift) of output c of strip s in group g: per group, or one float
// per super-block times the group's int8 sub-scale (qgemm.hpp)
float group_factor(const qgemm::Packed& p, const float* f, const std::int8_t* i, std::size_t s, std::size_t c,
                   std::size_t g) {
  constexpr std::size_t kS = qgemm::kStrip;
  if (p.sub == 1) return f[(s * p.n_groups + g) * kS + c];
  return f[(s * (p.n_groups / p.sub) + g / p.sub) * kS + c] * static_cast<float>(i[(s * p.n_groups + g) * kS + c]);
}

}  // namespace

template <>
void qgemm_quantize_rows<Isa::scalar>(const float* x, std::size_t k, std::size_t kpad, std::size_t r0, std::size_t r1,
                                      std::int8_t* q, float* xs) {
  for (std::size_t r = r0; r < r1; ++r) {
    const float* xr = x + r * k;
    std::int8_t* qr = q + r * kpad;
    float amax = 0.0f;
    bool finite = true;
    for (std::size_t j = 0; j < k; ++j) {
      const float a = std::fabs(xr[j]);
      if (!(a <= FLT_MAX)) finite = false;
      else if (a > amax) amax = a;
    }
    std::memset(qr, 0, kpad);
    if (!finite) {
      xs[r] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    if (amax < FLT_MIN) {  // zero (or subnormal) row: 127 / amax would overflow
      xs[r] = 0.0f;
      continue;
    }
    xs[r] = amax / 127.0f;
    const float inv = 127.0f / amax;
    for (std::size_t j = 0; j < k; ++j) {
      float v = std::nearbyint(xr[j] * inv);
      v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
      qr[j] = static_cast<std::int8_t>(v);
    }
  }
}

template <>
void qgemm_strips<Isa::scalar>(const qgemm::Packed& p, const std::int8_t* q, const float* xs,
                               const std::int32_t* qsum, std::size_t m, std::size_t s0, std::size_t s1, qgemm::Dot dot,
                               const float* bias, float* y) {
  (void)dot;  // madd on the scalar level
  for (std::size_t t = 0; t < m; ++t) {
    const std::int8_t* xr = q + t * p.kpad;
    for (std::size_t s = s0; s < s1; ++s)
      for (std::size_t c = 0; c < qgemm::kStrip && s * qgemm::kStrip + c < p.n; ++c) {
        float acc = 0.0f;
        for (std::size_t g = 0; g < p.n_groups; ++g) {
          const std::size_t k1 = (g + 1) * p.group < p.kpad ? (g + 1) * p.group : p.kpad;
          std::int32_t sum = 0;
          for (std::size_t k = g * p.group; k < k1; ++k) sum += xr[k] * weight_code(p, s, c, k);
          const std::int32_t qs = qsum ? qsum[t * p.n_groups + g] : 0;
          sum += p.zoff * qs;
          acc = std::fma(static_cast<float>(sum), group_factor(p, p.scale, p.iscale, s, c, g), acc);
          if (p.shift) acc = std::fma(static_cast<float>(qs), group_factor(p, p.shift, p.ishift, s, c, g), acc);
        }
        const std::size_t n = s * qgemm::kStrip + c;
        float v = acc * xs[t];
        if (bias) v += bias[n];
        y[t * p.n + n] = v;
      }
  }
}

}  // namespace slimgrad::kernels
