// Scalar reference (the oracle) of the GGUF K-quants: llama.cpp's
// quantize_row_qN_K_ref (no importance matrix) and quantize_row_qN_K_impl
// (with one), re-written from the algorithm in plain loops, and the
// dequantizers.
//  - float arithmetic in llama.cpp's order and types (float, never double;
//    `w*x*l` is (w*x)*l), compiled with -ffp-contract=off so no a*b+c becomes
//    an FMA: llama.cpp's reference is built without FMA contraction too;
//  - rounding: nearest_int (half to even via the 1.5 * 2^23 trick) and
//    ggml's fp16 conversion (kquant_ref.hpp); narrowing casts to uint8/int8
//    where llama.cpp narrows, before its MIN/MAX;
//  - comparisons keep C's NaN behaviour (a NaN never compares greater), which
//    matters for blocks of huge values whose squares overflow.
#include <cmath>
#include <cstring>

#include "kquant_ref.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
namespace kq {

namespace {
constexpr int QK_K = static_cast<int>(kquant::kQK);
constexpr float GROUP_MAX_EPS = 1e-15f;
inline int imax(int a, int b) { return a > b ? a : b; }
inline int imin(int a, int b) { return a < b ? a : b; }

// llama.cpp's `max` of a symmetric group: the signed value of the first
// largest |x|, or 0 when every |x| is below GROUP_MAX_EPS (the group is then
// stored as zeros).
float group_max(int n, const float* x) {
  float max = 0, amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) { amax = ax; max = x[i]; }
  }
  return amax < GROUP_MAX_EPS ? 0.0f : max;
}

}  // namespace

// make_qx_quants (symmetric codes in [-nmax, nmax - 1], stored + nmax) with
// rmse_type 1: weights qw, or x^2 without them.
float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L, const float* qw) {
  const float max = group_max(n, x);
  if (max == 0.0f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
    L[i] = static_cast<std::int8_t>(l + nmax);
    const float w = qw ? qw[i] : x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
      const float w = qw ? qw[i] : x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i)
        L[i] = static_cast<std::int8_t>(nmax + imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i]))));
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// make_q3_quants with do_rmse: coordinate descent on the codes, weights x^2.
float make_q3_quants(int n, int nmax, const float* x, std::int8_t* L) {
  const float max = group_max(n, x);
  if (max == 0.0f) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = -nmax / max;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = imax(-nmax, imin(nmax - 1, nearest_int(iscale * x[i])));
    L[i] = static_cast<std::int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        const int new_l = imax(-nmax, imin(nmax - 1, nearest_int(x[i] * sl2 / slx)));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// make_qkx2_quants / make_qkx3_quants (asymmetric codes in [0, nmax], the
// min is returned negated in *the_min). With explicit weights the two are
// the same function: qkx3 only differs when weights are null (not used) and
// in `max <= min` vs `max == min`, equal since min <= max for finite x.
float make_qkx_quants(int n, int nmax, const float* x, const float* weights, std::uint8_t* L, float* the_min,
                      float rmin, float rdelta, int nstep, bool use_mad) {
  std::uint8_t Laux[32];
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<std::uint8_t>(imax(0, imin(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = imax(0, imin(nmax, nearest_int(iscale * (x[i] - min))));
      Laux[i] = static_cast<std::uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// make_qp_quants: non-negative values x[n] (sub-block scales or mins) to
// codes in [0, nmax] with weights qw; returns the super-block scale.
float make_qp_quants(int n, int nmax, const float* x, std::uint8_t* L, const float* qw) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];  // ggml's MAX(max, x[i])
  if (max < GROUP_MAX_EPS) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = nmax / max;
  for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(nearest_int(iscale * x[i]));
  float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * L[i];
    best_mse += qw[i] * diff * diff;
  }
  for (int is = -4; is <= 4; ++is) {
    if (is == 0) continue;
    const float iscale_is = (0.1f * is + nmax) / max;
    const float scale_is = 1 / iscale_is;
    float mse = 0;
    for (int i = 0; i < n; ++i) {
      const int l = imin(nmax, nearest_int(iscale_is * x[i]));
      const float diff = x[i] - scale_is * l;
      mse += qw[i] * diff * diff;
    }
    if (mse < best_mse) {
      best_mse = mse;
      iscale = iscale_is;
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = imin(nmax, nearest_int(iscale * x[i]));
    L[i] = static_cast<std::uint8_t>(l);
    sumlx += qw[i] * x[i] * l;
    suml2 += qw[i] * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = qw[i];
      float slx = sumlx - w * x[i] * L[i];
      float sl2 = suml2 - w * L[i] * L[i];
      if (slx > 0 && sl2 > 0) {
        const int new_l = imin(nmax, nearest_int(x[i] * sl2 / slx));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<std::uint8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

void q3k_block(const float* x, const float* qw, BlockQ3K* y) {
  std::int8_t L[QK_K];
  float scales[QK_K / 16];
  std::memset(y->scales, 0, 12);
  if (!qw) {  // quantize_row_q3_K_ref
    float max_scale = 0, amax = 0;
    for (int j = 0; j < QK_K / 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) { amax = scale; max_scale = scales[j]; }
    }
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < QK_K / 16; ++j) {
        std::int8_t l = static_cast<std::int8_t>(nearest_int(iscale * scales[j]));
        l = static_cast<std::int8_t>(imax(-32, imin(31, l)) + 32);
        q3k_pack_scale(j, l, y->scales);
      }
      y->d = fp32_to_fp16(1 / iscale);
    } else {
      y->d = fp32_to_fp16(0.f);
    }
  } else {  // quantize_row_q3_K_impl
    float sumx2 = 0;
    for (int j = 0; j < QK_K; ++j) sumx2 += x[j] * x[j];
    const float sigma2 = 2 * sumx2 / QK_K;
    float weight[16], sw[QK_K / 16];
    std::int8_t Ls[QK_K / 16];
    for (int j = 0; j < QK_K / 16; ++j) {
      for (int l = 0; l < 16; ++l) weight[l] = qw[16 * j + l] * std::sqrt(sigma2 + x[16 * j + l] * x[16 * j + l]);
      float sumw = 0;
      for (int l = 0; l < 16; ++l) sumw += weight[l];
      sw[j] = sumw;
      scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, weight);
    }
    const float d_block = make_qx_quants(QK_K / 16, 32, scales, Ls, sw);
    for (int j = 0; j < QK_K / 16; ++j) q3k_pack_scale(j, Ls[j], y->scales);
    y->d = fp32_to_fp16(d_block);
  }
  q3k_finish(x, L, y);
}

// Sub-block search of Q4_K/Q5_K (8 x 32) or Q2_K (16 x 16), one super-block.
void qkx_search(KType t, const float* x, const float* qw, float* scales, float* mins, float* sw,
                std::uint8_t* L) {
  const bool q2 = t == KType::q2_k;
  const int n = q2 ? 16 : 32, nsub = QK_K / n, nmax = q2 ? 3 : t == KType::q4_k ? 15 : 31;
  float weights[32];
  float sigma2 = 0;
  if (qw) {
    float sum_x2 = 0;
    for (int l = 0; l < QK_K; ++l) sum_x2 += x[l] * x[l];
    sigma2 = q2 ? sum_x2 / QK_K : 2 * sum_x2 / QK_K;
  }
  for (int j = 0; j < nsub; ++j) {
    const float* xs = x + n * j;
    if (qw) {
      for (int l = 0; l < n; ++l) weights[l] = qw[n * j + l] * std::sqrt(sigma2 + xs[l] * xs[l]);
      float sumw = 0;
      for (int l = 0; l < n; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = make_qkx_quants(n, nmax, xs, weights, L + n * j, &mins[j], -0.9f, 0.05f, 36, false);
    } else if (q2) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(xs[l]);
      scales[j] = make_qkx_quants(16, 3, xs, weights, L + 16 * j, &mins[j], -0.5f, 0.1f, 15, true);
    } else {
      float sum_x2 = 0;
      for (int l = 0; l < 32; ++l) sum_x2 += xs[l] * xs[l];
      const float av_x = std::sqrt(sum_x2 / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
      const bool q4 = t == KType::q4_k;
      scales[j] = make_qkx_quants(32, nmax, xs, weights, L + 32 * j, &mins[j], q4 ? -1.f : -0.5f, 0.1f,
                                  q4 ? 20 : 15, false);
    }
  }
}

void quantize_ref(int type, const float* x, std::size_t n_blocks, const float* qw, void* out) {
  const KType t = static_cast<KType>(type);
  const std::size_t ts = kquant::type_size(t);
  for (std::size_t i = 0; i < n_blocks; ++i) {
    const float* xb = x + QK_K * i;
    const float* wb = qw ? qw + QK_K * i : nullptr;
    void* yb = static_cast<std::uint8_t*>(out) + ts * i;
    if (t == KType::q6_k) {
      std::int8_t L[QK_K];
      float scales[16];
      for (int ib = 0; ib < 16; ++ib)
        scales[ib] = make_qx_quants(16, 32, xb + 16 * ib, L + 16 * ib, wb ? wb + 16 * ib : nullptr);
      q6k_finish(xb, scales, L, static_cast<BlockQ6K*>(yb));
    } else if (t == KType::q3_k) {
      q3k_block(xb, wb, static_cast<BlockQ3K*>(yb));
    } else {
      std::uint8_t L[QK_K];
      float scales[16], mins[16], sw[16];
      qkx_search(t, xb, wb, scales, mins, sw, L);
      if (t == KType::q2_k) q2k_finish(xb, scales, mins, wb ? sw : nullptr, L, static_cast<BlockQ2K*>(yb));
      else q45k_finish(t == KType::q5_k, xb, scales, mins, wb ? sw : nullptr, L, yb);
    }
  }
}

}  // namespace kq

template <>
void kquant_quantize<Isa::scalar>(int type, const float* x, std::size_t n_blocks, const float* qw, void* out) {
  kq::quantize_ref(type, x, n_blocks, qw, out);
}
template <>
void kquant_dequantize<Isa::scalar>(int type, const void* in, std::size_t n_blocks, float* out) {
  kq::dequantize_ref(type, in, n_blocks, out);
}

}  // namespace slimgrad::kernels
