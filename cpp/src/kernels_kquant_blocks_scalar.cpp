// Scalar reference, second half: ggml's fp16 conversion, the per-super-block
// finishing steps of the K-quants (scale quantization, final codes, bit
// packing; shared with the SIMD kernels, see kquant_ref.hpp) and the
// dequantizers (float `d * sc` then `* q - m`, never fused: what llama.cpp
// and gguf.quants.dequantize compute). Built like every _scalar.cpp file with
// -ffp-contract=off.
#include <cmath>
#include <cstring>

#include "kquant_ref.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels::kq {

namespace {
constexpr int QK_K = static_cast<int>(kquant::kQK);
constexpr float GROUP_MAX_EPS = 1e-15f;
inline int imax(int a, int b) { return a > b ? a : b; }
inline int imin(int a, int b) { return a < b ? a : b; }

// The 12-byte 6-bit scale/min packing of Q4_K and Q5_K.
void pack_scale_min_k4(int j, std::uint8_t ls, std::uint8_t lm, std::uint8_t* q) {
  if (j < 4) {
    q[j] = ls;
    q[j + 4] = lm;
  } else {
    q[j + 4] = static_cast<std::uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
    q[j - 4] |= static_cast<std::uint8_t>((ls >> 4) << 6);
    q[j - 0] |= static_cast<std::uint8_t>((lm >> 4) << 6);
  }
}

// 2-bit codes L[256] into qs[64]: byte l of each 128-value half holds
// values l, l + 32, l + 64, l + 96 (Q2_K and the low bits of Q3_K).
void pack_2bit(const std::uint8_t* L, std::uint8_t* qs) {
  for (int j = 0; j < QK_K; j += 128)
    for (int l = 0; l < 32; ++l)
      qs[j / 4 + l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) |
                                                (L[j + l + 96] << 6));
}

}  // namespace

void get_scale_min_k4(int j, const std::uint8_t* q, std::uint8_t* d, std::uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4));
  }
}

int q3k_scale(const std::uint8_t* s, int j) {
  const int lo = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
  return static_cast<std::int8_t>(lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}

void q3k_pack_scale(int j, int l, std::uint8_t* s) {
  if (j < 8) s[j] = static_cast<std::uint8_t>(l & 0xF);
  else s[j - 8] |= static_cast<std::uint8_t>((l & 0xF) << 4);
  l >>= 4;
  s[j % 4 + 8] |= static_cast<std::uint8_t>(l << (2 * (j / 4)));
}

// Final codes and bit packing of Q3_K from its packed scales.
void q3k_finish(const float* x, std::int8_t* L, BlockQ3K* y) {
  for (int j = 0; j < QK_K / 16; ++j) {
    const float d = fp16_to_fp32(y->d) * static_cast<std::int8_t>(q3k_scale(y->scales, j));
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii) {
      const int l = imax(-4, imin(3, nearest_int(x[16 * j + ii] / d)));
      L[16 * j + ii] = static_cast<std::int8_t>(l + 4);
    }
  }
  std::memset(y->hmask, 0, sizeof(y->hmask));
  int m = 0;
  std::uint8_t hm = 1;
  std::uint8_t U[QK_K];
  for (int j = 0; j < QK_K; ++j) {
    int l = L[j];
    if (l > 3) {
      y->hmask[m] |= hm;
      l -= 4;
    }
    U[j] = static_cast<std::uint8_t>(l);
    if (++m == QK_K / 8) {
      m = 0;
      hm = static_cast<std::uint8_t>(hm << 1);
    }
  }
  pack_2bit(U, y->qs);
}

std::uint16_t fp32_to_fp16(float f) {
  const float scale_to_inf = 0x1.0p+112f, scale_to_zero = 0x1.0p-110f;
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  std::uint32_t w;
  std::memcpy(&w, &f, 4);
  const std::uint32_t shl1_w = w + w, sign = w & 0x80000000u;
  std::uint32_t bias = shl1_w & 0xFF000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  const std::uint32_t bb = (bias >> 1) + 0x07800000u;
  float fb;
  std::memcpy(&fb, &bb, 4);
  base = fb + base;
  std::uint32_t bits;
  std::memcpy(&bits, &base, 4);
  const std::uint32_t nonsign = ((bits >> 13) & 0x7C00u) + (bits & 0x0FFFu);
  return static_cast<std::uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

float fp16_to_fp32(std::uint16_t h) { return simd::half_to_float(h); }

void q45k_finish(bool five, const float* x, const float* scales, const float* mins, const float* sw,
                 std::uint8_t* L, void* block) {
  // Q4_K and Q5_K share d, dmin, scales[12] at the front.
  auto* y = static_cast<BlockQ4K*>(block);
  std::uint8_t* qs = five ? static_cast<BlockQ5K*>(block)->qs : y->qs;
  if (sw) {  // quantize_row_q{4,5}_K_impl
    std::uint8_t Ls[8], Lm[8];
    const float d_block = make_qp_quants(8, 63, scales, Ls, sw);
    const float m_block = make_qp_quants(8, 63, mins, Lm, sw);
    for (int j = 0; j < 8; ++j) {
      const std::uint8_t ls = Ls[j] < 63 ? Ls[j] : 63, lm = Lm[j] < 63 ? Lm[j] : 63;  // MIN(63, .) of Q5
      pack_scale_min_k4(j, five ? ls : Ls[j], five ? lm : Lm[j], y->scales);
    }
    y->d = fp32_to_fp16(d_block);
    y->dmin = fp32_to_fp16(m_block);
  } else {  // quantize_row_q{4,5}_K_ref
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      std::uint8_t ls = static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j]));
      std::uint8_t lm = static_cast<std::uint8_t>(nearest_int(inv_min * mins[j]));
      ls = ls < 63 ? ls : 63;
      lm = lm < 63 ? lm : 63;
      pack_scale_min_k4(j, ls, lm, y->scales);
    }
    y->d = fp32_to_fp16(max_scale / 63.f);
    y->dmin = fp32_to_fp16(max_min / 63.f);
  }
  const int nmax = five ? 31 : 15;
  for (int j = 0; j < 8; ++j) {
    std::uint8_t sc, m;
    get_scale_min_k4(j, y->scales, &sc, &m);
    const float d = fp16_to_fp32(y->d) * sc;
    if (!d) continue;
    const float dm = fp16_to_fp32(y->dmin) * m;
    for (int ii = 0; ii < 32; ++ii)
      L[32 * j + ii] = static_cast<std::uint8_t>(imax(0, imin(nmax, nearest_int((x[32 * j + ii] + dm) / d))));
  }
  if (!five) {
    for (int j = 0; j < QK_K; j += 64)
      for (int l = 0; l < 32; ++l) qs[j / 2 + l] = static_cast<std::uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    return;
  }
  std::uint8_t* qh = static_cast<BlockQ5K*>(block)->qh;
  std::memset(qh, 0, QK_K / 8);
  std::uint8_t m1 = 1, m2 = 2;
  for (int n = 0; n < QK_K; n += 64) {
    for (int j = 0; j < 32; ++j) {
      int l1 = L[n + j], l2 = L[n + j + 32];
      if (l1 > 15) { l1 -= 16; qh[j] |= m1; }
      if (l2 > 15) { l2 -= 16; qh[j] |= m2; }
      qs[n / 2 + j] = static_cast<std::uint8_t>(l1 | (l2 << 4));
    }
    m1 = static_cast<std::uint8_t>(m1 << 2);
    m2 = static_cast<std::uint8_t>(m2 << 2);
  }
}

void q6k_finish(const float* x, const float* scales, std::int8_t* L, BlockQ6K* y) {
  float max_scale = 0, max_abs_scale = 0;
  for (int ib = 0; ib < QK_K / 16; ++ib) {
    const float abs_scale = std::fabs(scales[ib]);
    if (abs_scale > max_abs_scale) { max_abs_scale = abs_scale; max_scale = scales[ib]; }
  }
  if (max_abs_scale < GROUP_MAX_EPS) {
    std::memset(y, 0, sizeof(*y));
    y->d = fp32_to_fp16(0.f);
    return;
  }
  const float iscale = -128.f / max_scale;
  y->d = fp32_to_fp16(1 / iscale);
  for (int ib = 0; ib < QK_K / 16; ++ib)
    y->scales[ib] = static_cast<std::int8_t>(imin(127, nearest_int(iscale * scales[ib])));
  for (int j = 0; j < QK_K / 16; ++j) {
    const float d = fp16_to_fp32(y->d) * y->scales[j];
    if (!d) continue;
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<std::int8_t>(imax(-32, imin(31, nearest_int(x[16 * j + ii] / d))) + 32);
  }
  std::uint8_t* ql = y->ql;
  std::uint8_t* qh = y->qh;
  for (int j = 0; j < QK_K; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const int q1 = L[j + l] & 0xF, q2 = L[j + l + 32] & 0xF, q3 = L[j + l + 64] & 0xF, q4 = L[j + l + 96] & 0xF;
      ql[l] = static_cast<std::uint8_t>(q1 | (q3 << 4));
      ql[l + 32] = static_cast<std::uint8_t>(q2 | (q4 << 4));
      qh[l] = static_cast<std::uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) | ((L[j + l + 64] >> 4) << 4) |
                                        ((L[j + l + 96] >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}

void q2k_finish(const float* x, const float* scales, const float* mins, const float* sw, std::uint8_t* L,
                BlockQ2K* y) {
  if (sw) {  // quantize_row_q2_K_impl
    std::uint8_t Ls[16], Lm[16];
    const float dm = make_qp_quants(16, 15, scales, Ls, sw);
    const float mm = make_qp_quants(16, 15, mins, Lm, sw);
    y->d = fp32_to_fp16(dm);
    y->dmin = fp32_to_fp16(mm);
    for (int j = 0; j < 16; ++j) y->scales[j] = static_cast<std::uint8_t>(Ls[j] | (Lm[j] << 4));
  } else {  // quantize_row_q2_K_ref
    const float q4scale = 15.f;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 16; ++j) {
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < 16; ++j) y->scales[j] = static_cast<std::uint8_t>(nearest_int(iscale * scales[j]));
      y->d = fp32_to_fp16(max_scale / q4scale);
    } else {
      for (int j = 0; j < 16; ++j) y->scales[j] = 0;
      y->d = fp32_to_fp16(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < 16; ++j) y->scales[j] |= static_cast<std::uint8_t>(static_cast<unsigned>(nearest_int(iscale * mins[j])) << 4);
      y->dmin = fp32_to_fp16(max_min / q4scale);
    } else {
      y->dmin = fp32_to_fp16(0.f);
    }
  }
  for (int j = 0; j < 16; ++j) {
    const float d = fp16_to_fp32(y->d) * (y->scales[j] & 0xF);
    if (!d) continue;
    const float dm = fp16_to_fp32(y->dmin) * (y->scales[j] >> 4);
    for (int ii = 0; ii < 16; ++ii)
      L[16 * j + ii] = static_cast<std::uint8_t>(imax(0, imin(3, nearest_int((x[16 * j + ii] + dm) / d))));
  }
  pack_2bit(L, y->qs);
}

void dequantize_ref(int type, const void* in, std::size_t n_blocks, float* out) {
  const KType t = static_cast<KType>(type);
  for (std::size_t i = 0; i < n_blocks; ++i) {
    float* y = out + QK_K * i;
    if (t == KType::q4_k || t == KType::q5_k) {
      // Q4_K and Q5_K share d, dmin and scales[12] at the front.
      const bool five = t == KType::q5_k;
      const auto* b5 = static_cast<const BlockQ5K*>(in) + i;
      const auto* b = five ? reinterpret_cast<const BlockQ4K*>(b5) : static_cast<const BlockQ4K*>(in) + i;
      const std::uint8_t* q = five ? b5->qs : b->qs;
      const float d = fp16_to_fp32(b->d), min = fp16_to_fp32(b->dmin);
      for (int j = 0; j < 8; ++j) {
        std::uint8_t sc, m;
        get_scale_min_k4(j, b->scales, &sc, &m);
        const float dl = d * sc, ml = min * m;
        for (int l = 0; l < 32; ++l) {
          int v = (q[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
          if (five && (b5->qh[l] >> j) & 1) v += 16;
          y[32 * j + l] = dl * v - ml;
        }
      }
    } else if (t == KType::q6_k) {
      const auto* b = static_cast<const BlockQ6K*>(in) + i;
      const float d = fp16_to_fp32(b->d);
      for (int k = 0; k < QK_K; ++k) {  // value k: half h, quarter s, lane l
        const int h = k / 128, s = (k % 128) / 32, l = k % 32;
        const int lo = (b->ql[64 * h + 32 * (s & 1) + l] >> (4 * (s >> 1))) & 0xF;
        const int hi = (b->qh[32 * h + l] >> (2 * s)) & 3;
        y[k] = d * b->scales[8 * h + 2 * s + l / 16] * static_cast<float>((lo | (hi << 4)) - 32);
      }
    } else if (t == KType::q2_k) {
      const auto* b = static_cast<const BlockQ2K*>(in) + i;
      const float d = fp16_to_fp32(b->d), min = fp16_to_fp32(b->dmin);
      for (int k = 0; k < QK_K; ++k) {  // value k: half h, shift s, sub-block is = k / 16
        const int h = k / 128, s = (k % 128) / 32, l = k % 32;
        const std::uint8_t sc = b->scales[k / 16];
        const float dl = d * (sc & 0xF), ml = min * (sc >> 4);
        y[k] = dl * static_cast<float>((b->qs[32 * h + l] >> (2 * s)) & 3) - ml;
      }
    } else {
      const auto* b = static_cast<const BlockQ3K*>(in) + i;
      const float d_all = fp16_to_fp32(b->d);
      for (int k = 0; k < QK_K; ++k) {
        const int h = k / 128, s = (k % 128) / 32, l = k % 32;
        const float dl = d_all * static_cast<float>(q3k_scale(b->scales, k / 16));
        const int q = ((b->qs[32 * h + l] >> (2 * s)) & 3) - ((b->hmask[l] >> (4 * h + s)) & 1 ? 0 : 4);
        y[k] = dl * static_cast<float>(q);
      }
    }
  }
}

}  // namespace slimgrad::kernels::kq
