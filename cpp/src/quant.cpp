// Threaded, dispatched entry points of the quantizers (see quant.hpp).
//
// Three passes, each over fixed work items (so results never depend on the
// thread count):
//  1. statistics: min, max and the first non-finite index per parameter
//     (per group, or per (run, chunk) combined in order for runs);
//  2. parameters: scale, 1/scale and zero point per parameter (scalar, tiny);
//  3. codes: items of up to kChunk columns of one row (a multiple of 8, so
//     every item starts on a byte of the packed row); each item splits into
//     segments of constant parameters, quantized by the SIMD kernel into a
//     stack buffer and then packed (or written straight to data for 8 bits).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimgrad/core.hpp"
#include "slimgrad/quant.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad::quant {
namespace {

constexpr std::size_t kChunk = 8192;      // columns per code item (multiple of 8)
constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();

struct Stat {
  float lo = 0.0f, hi = 0.0f;
  bool seen = false;
  std::size_t bad = kNone;  // flat index of the first non-finite element
};

// Adds x[f] = v to st: a non-finite value only records its flat index.
void add_value(Stat& st, float v, std::size_t f) {
  if (!std::isfinite(v)) {
    st.bad = std::min(st.bad, f);
    st.seen = true;
    return;
  }
  if (!st.seen) {
    st.lo = st.hi = v;
    st.seen = true;
  }
  st.lo = v < st.lo ? v : st.lo;
  st.hi = st.hi < v ? v : st.hi;
}

void merge(Stat& into, const Stat& s) {
  if (!s.seen) return;
  if (!into.seen) {
    into = s;
    return;
  }
  into.lo = s.lo < into.lo ? s.lo : into.lo;
  into.hi = into.hi < s.hi ? s.hi : into.hi;
  into.bad = std::min(into.bad, s.bad);
}

// Calls fn(param, jb, je) for the segments of constant parameter covering
// columns [j0, j1) of row r.
template <class Fn>
void for_segments(const Spec& s, std::size_t r, std::size_t j0, std::size_t j1, Fn&& fn) {
  if (s.layout == Layout::groups) {
    const std::size_t G = s.n_groups();
    for (std::size_t j = j0; j < j1;) {
      const std::size_t g = j / s.group_size;
      const std::size_t e = std::min(j1, (g + 1) * s.group_size);
      fn(r * G + g, j, e);
      j = e;
    }
  } else {
    const std::size_t base = r * s.cols;
    for (std::size_t f = base + j0; f < base + j1;) {
      const std::size_t t = f / s.run;
      const std::size_t e = std::min(base + j1, (t + 1) * s.run);
      fn(t % s.channels, f - base, e - base);
      f = e;
    }
  }
}

template <Isa I>
Stat segment_stat(const float* x, std::size_t n, std::size_t flat0) {
  Stat st;
  if (n == 0) return st;
  const std::size_t k = kernels::quant_minmax<I>(x, n, &st.lo, &st.hi);
  st.seen = true;
  if (k < n) st.bad = flat0 + k;
  return st;
}

std::vector<Stat> statistics(const float* x, const Spec& s) {
  std::vector<Stat> stats(s.n_params());
  if (s.size() == 0) return stats;
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    if (s.layout == Layout::groups) {
      const std::size_t G = s.n_groups();
      const std::size_t grain = std::max<std::size_t>(1, kGrain / s.group_size);
      parallel_chunks(stats.size(), grain, [&](std::size_t b, std::size_t e) {
        for (std::size_t p = b; p < e; ++p) {
          const std::size_t r = p / G, j0 = (p % G) * s.group_size;
          const std::size_t j1 = std::min(s.cols, j0 + s.group_size);
          stats[p] = segment_stat<I>(x + r * s.cols + j0, j1 - j0, r * s.cols + j0);
        }
      });
    } else if (s.run >= 256) {
      const std::size_t n_runs = s.size() / s.run;
      const std::size_t per_run = (s.run + kGrain - 1) / kGrain;
      std::vector<Stat> parts(n_runs * per_run);
      parallel_chunks(parts.size(), 1, [&](std::size_t b, std::size_t e) {
        for (std::size_t item = b; item < e; ++item) {
          const std::size_t f0 = (item / per_run) * s.run + (item % per_run) * kGrain;
          const std::size_t f1 = std::min((item / per_run + 1) * s.run, f0 + kGrain);
          parts[item] = segment_stat<I>(x + f0, f1 - f0, f0);
        }
      });
      for (std::size_t item = 0; item < parts.size(); ++item)
        merge(stats[(item / per_run) % s.channels], parts[item]);
    } else if (s.run == 1 && s.channels == s.cols) {
      // Channels along the last axis: column blocks in parallel, rows in order.
      parallel_chunks(s.cols, 256, [&](std::size_t c0, std::size_t c1) {
        for (std::size_t r = 0; r < s.rows; ++r) {
          const float* xr = x + r * s.cols;
          for (std::size_t c = c0; c < c1; ++c) add_value(stats[c], xr[c], r * s.cols + c);
        }
      });
    } else {
      // Short runs (e.g. channels along the middle axis of a 3-D tensor): a plain pass.
      for (std::size_t f = 0; f < s.size(); ++f) add_value(stats[(f / s.run) % s.channels], x[f], f);
    }
  });
  return stats;
}

Param make_param(float lo, float hi, bool constant, const Spec& s) {
  return make_param(lo, hi, constant, s.qmax(), s.symmetric);
}

std::vector<Param> parameters(const float* x, const Spec& s, const std::vector<Stat>& stats);

}  // namespace

// The codes of a tensor row by row in chunks of cw columns (in parallel,
// chunk boundaries from the shape only): fn(isa, item, r, j0, j1, codes)
// with the codes of columns [j0, j1) of row r. Encoding (Byte non-const):
// fn writes them, to data itself for 8-bit codes, else to a stack buffer
// packed into data afterwards. Decoding (const Byte): fn reads them, from
// data, or from the buffer data's chunk was unpacked into.
namespace {
template <class Byte, class Fn>
void for_code_chunks(const Spec& s, std::size_t cw, Byte* data, Fn&& fn) {
  constexpr bool encode = !std::is_const_v<Byte>;
  const std::size_t per_row = (s.cols + cw - 1) / cw, rb = s.row_bytes();
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_chunks(s.rows * per_row, 1, [&](std::size_t b, std::size_t e) {
      std::uint8_t buf[kChunk];
      for (std::size_t item = b; item < e; ++item) {
        const std::size_t r = item / per_row, j0 = (item % per_row) * cw;
        const std::size_t j1 = std::min(s.cols, j0 + cw);
        Byte* packed = data + r * rb + j0 * s.bits / 8;
        Byte* codes = s.bits == 8 ? packed : buf;
        if (!encode && s.bits < 8) kernels::quant_unpack<I>(packed, j1 - j0, s.bits, s.symmetric, buf);
        fn(isa, item, r, j0, j1, codes);
        if constexpr (encode) {
          if (s.bits < 8) kernels::quant_pack<I>(buf, j1 - j0, s.bits, packed);
        }
      }
    });
  });
}
}  // namespace

// Groups with min/max ranges: one pass. Each item is whole groups of one
// row (a multiple of 8 columns), so statistics, parameters and codes of a
// group are made while it is in cache, with no per-group temporaries. On a
// non-finite value (raise mode) the outputs are garbage, but the caller
// discards them: only the first bad index is reported.
static std::ptrdiff_t quantize_groups_fused(const float* x, const Spec& s, float* scale, std::int32_t* zero_point,
                                            std::uint8_t* data) {
  const std::size_t gs = s.group_size, cw = (kChunk / gs) * gs;
  const std::size_t per_row = (s.cols + cw - 1) / cw, G = s.n_groups();
  std::vector<std::size_t> first(s.rows * per_row, kNone);
  for_code_chunks(s, cw, data, [&](auto isa, std::size_t item, std::size_t r, std::size_t j0, std::size_t j1,
                                     std::uint8_t* dst) {
    const std::size_t p0 = r * G + j0 / gs;
    const std::size_t k = kernels::quant_groups<decltype(isa)::value>(
        x + r * s.cols + j0, j1 - j0, gs, s.bits, s.symmetric, static_cast<int>(s.rounding), s.seed, r * s.cols + j0,
        scale + p0, zero_point + p0, dst);
    if (k < j1 - j0) first[item] = r * s.cols + j0 + k;
  });
  if (!s.propagate) {
    const std::size_t bad = *std::min_element(first.begin(), first.end());
    if (bad != kNone) return static_cast<std::ptrdiff_t>(bad);
  }
  return -1;
}

std::ptrdiff_t quantize(const float* x, const Spec& s, float* scale, std::int32_t* zero_point,
                        std::uint8_t* data) {
  if (s.clip == Clip::minmax && s.size() > 0) {
    if (s.layout == Layout::groups && s.group_size % 8 == 0 && s.group_size <= kChunk)
      return quantize_groups_fused(x, s, scale, zero_point, data);
    if (s.layout == Layout::runs && s.channels == s.rows && s.run == s.cols && s.cols <= kChunk) {
      Spec rows = s;  // one channel per row (axis 0 of a 2-D weight): one group per row
      rows.layout = Layout::groups;
      rows.group_size = s.cols;
      return quantize_groups_fused(x, rows, scale, zero_point, data);
    }
  }
  const std::vector<Stat> stats = statistics(x, s);
  if (!s.propagate) {
    std::size_t first = kNone;
    for (const Stat& st : stats) first = std::min(first, st.bad);
    if (first != kNone) return static_cast<std::ptrdiff_t>(first);
  }
  const std::vector<Param> params = parameters(x, s, stats);
  for (std::size_t p = 0; p < params.size(); ++p) {
    scale[p] = params[p].bad ? std::numeric_limits<float>::quiet_NaN() : params[p].scale;
    zero_point[p] = static_cast<std::int32_t>(params[p].zp);
  }
  if (s.size() == 0) return -1;
  const float qmin = static_cast<float>(s.qmin()), qmax = static_cast<float>(s.qmax());
  // Channels along the last axis: per-column parameter vectors, one kernel
  // call per item (unless a subnormal scale or a NaN group needs the
  // per-segment path).
  bool cols = s.layout == Layout::runs && s.run == 1 && s.channels == s.cols && s.cols > 1;
  for (const Param& q : params) cols = cols && !q.bad && !q.use_div;
  std::vector<float> invs, zps;
  if (cols) {
    for (const Param& q : params) {
      invs.push_back(q.inv);
      zps.push_back(q.zp);
    }
  }
  for_code_chunks(s, kChunk, data, [&](auto isa, std::size_t, std::size_t r, std::size_t j0, std::size_t j1,
                                         std::uint8_t* dst) {
    constexpr Isa I = decltype(isa)::value;
    if (cols) {
      kernels::quant_codes_cols<I>(x + r * s.cols + j0, j1 - j0, invs.data() + j0, zps.data() + j0, qmin, qmax,
                                   static_cast<int>(s.rounding), s.seed, r * s.cols + j0, dst);
      return;
    }
    for_segments(s, r, j0, j1, [&](std::size_t p, std::size_t jb, std::size_t je) {
      const Param& q = params[p];
      if (q.bad) {
        std::memset(dst + (jb - j0), static_cast<int>(q.zp), je - jb);
        return;
      }
      kernels::quant_codes<I>(x + r * s.cols + jb, je - jb, q.scale, q.inv, q.use_div, q.zp, qmin, qmax,
                              static_cast<int>(s.rounding), s.seed, r * s.cols + jb, dst + (jb - j0));
    });
  });
  return -1;
}

void dequantize(const std::uint8_t* data, const Spec& s, const float* scale, const std::int32_t* zero_point,
                float* out) {
  if (s.size() == 0) return;
  const bool cols = s.layout == Layout::runs && s.run == 1 && s.channels == s.cols && s.cols > 1;
  std::vector<float> zps;
  if (cols) zps.assign(zero_point, zero_point + s.cols);
  for_code_chunks(s, kChunk, data, [&](auto isa, std::size_t, std::size_t r, std::size_t j0, std::size_t j1,
                                       const std::uint8_t* src) {
    constexpr Isa I = decltype(isa)::value;
    if (cols) {
      kernels::quant_dequant_cols<I>(src, s.symmetric, j1 - j0, scale + j0, zps.data() + j0, out + r * s.cols + j0);
      return;
    }
    for_segments(s, r, j0, j1, [&](std::size_t p, std::size_t jb, std::size_t je) {
      kernels::quant_dequant<I>(src + (jb - j0), s.symmetric, je - jb, scale[p], static_cast<float>(zero_point[p]),
                                out + r * s.cols + jb);
    });
  });
}

// row(isa, r) for every row, rows split over the threads (pack / unpack).
template <class Row>
void for_rows(const Spec& s, Row&& row) {
  dispatch([&](auto isa) {
    parallel_chunks(s.rows, std::max<std::size_t>(1, kGrain / std::max<std::size_t>(1, s.cols)),
                    [&](std::size_t b, std::size_t e) {
                      for (std::size_t r = b; r < e; ++r) row(isa, r);
                    });
  });
}

void unpack(const std::uint8_t* data, const Spec& s, std::uint8_t* codes) {
  const std::size_t rb = s.row_bytes();
  for_rows(s, [&](auto isa, std::size_t r) {
    kernels::quant_unpack<decltype(isa)::value>(data + r * rb, s.cols, s.bits, s.symmetric, codes + r * s.cols);
  });
}

void pack(const std::uint8_t* codes, const Spec& s, std::uint8_t* data) {
  const std::size_t rb = s.row_bytes();
  for_rows(s, [&](auto isa, std::size_t r) {
    kernels::quant_pack<decltype(isa)::value>(codes + r * s.cols, s.cols, s.bits, data + r * rb);
  });
}

namespace {

// The values of parameter p, gathered (groups are contiguous; a channel is
// every channels-th run).
void gather(const float* x, const Spec& s, std::size_t p, std::vector<float>& buf) {
  buf.clear();
  if (s.layout == Layout::groups) {
    const std::size_t G = s.n_groups(), r = p / G, j0 = (p % G) * s.group_size;
    const std::size_t j1 = std::min(s.cols, j0 + s.group_size);
    buf.assign(x + r * s.cols + j0, x + r * s.cols + j1);
  } else {
    for (std::size_t t = p; t * s.run < s.size(); t += s.channels)
      buf.insert(buf.end(), x + t * s.run, x + (t + 1) * s.run);
  }
}

// np.percentile(v, q) with the default linear interpolation (v is reordered).
double percentile_of(std::vector<float>& v, double q) {
  const std::size_t n = v.size();
  const double pos = q / 100.0 * static_cast<double>(n - 1);
  const std::size_t k = std::min(static_cast<std::size_t>(pos), n - 1);
  const double t = pos - static_cast<double>(k);
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  const double a = v[k];
  if (t <= 0.0 || k + 1 >= n) return a;
  const double b = *std::min_element(v.begin() + static_cast<std::ptrdiff_t>(k) + 1, v.end());
  const double d = b - a;
  return t >= 0.5 ? b - d * (1.0 - t) : a + d * t;  // NumPy's _lerp
}

// Squared reconstruction error of v under p, with the quantizer's own
// arithmetic (half-to-even rounding stands in for stochastic rounding).
double sq_error(const std::vector<float>& v, const Param& p, const Spec& s) {
  const float qmin = static_cast<float>(s.qmin()), qmax = static_cast<float>(s.qmax());
  const bool away = s.rounding == Rounding::half_away;
  double e = 0.0;
  for (float x : v) {
    const float r = p.use_div ? x / p.scale : x * p.inv;
    float t = r + p.zp;
    t = away ? std::round(t) : std::nearbyint(t);
    t = std::min(std::max(t, qmin), qmax);
    const double d = static_cast<double>(x) - static_cast<double>(p.scale * (t - p.zp));
    e += d * d;
  }
  return e;
}

// The clipped parameter of one group (clip != minmax, not constant).
Param clipped(std::vector<float>& v, const Stat& st, const Spec& s) {
  if (s.clip == Clip::percentile) {
    float lo, hi;
    if (s.symmetric) {
      for (float& x : v) x = std::fabs(x);
      hi = static_cast<float>(percentile_of(v, s.percentile));
      lo = -hi;
    } else {
      std::vector<float> w = v;
      lo = static_cast<float>(percentile_of(w, 100.0 - s.percentile));
      hi = static_cast<float>(percentile_of(v, s.percentile));
    }
    if (!(lo < hi) || (s.symmetric && hi == 0.0f)) return make_param(st.lo, st.hi, false, s);
    return make_param(lo, hi, false, s);
  }
  // mse: shrink the range by ratios 1, 1 - 1/steps, ...; the smallest error
  // wins, the widest range on ties.
  Param best = make_param(st.lo, st.hi, false, s);
  double best_err = sq_error(v, best, s);
  for (int k = 1; k < s.mse_steps; ++k) {
    const double ratio = 1.0 - static_cast<double>(k) / s.mse_steps;
    if (ratio < s.mse_min_ratio) break;
    const auto lo = static_cast<float>(st.lo * ratio), hi = static_cast<float>(st.hi * ratio);
    if (!(lo < hi)) break;
    const Param p = make_param(lo, hi, false, s);
    const double err = sq_error(v, p, s);
    if (err < best_err) {
      best = p;
      best_err = err;
    }
  }
  return best;
}

std::vector<Param> parameters(const float* x, const Spec& s, const std::vector<Stat>& stats) {
  std::vector<Param> params(stats.size());
  // Each parameter is independent, so any split over threads gives the same result.
  parallel_chunks(stats.size(), s.clip == Clip::minmax ? 4096 : 1, [&](std::size_t b, std::size_t e) {
    std::vector<float> buf;
    for (std::size_t p = b; p < e; ++p) {
      const Stat& st = stats[p];
      if (st.bad != kNone) {
        params[p].bad = true;
        params[p].zp = 0.0f;
        continue;
      }
      if (!st.seen) continue;  // no elements: scale 1, zero point 0
      const bool constant = st.lo == st.hi;
      if (s.clip == Clip::minmax || constant) {
        params[p] = make_param(st.lo, st.hi, constant, s);
        continue;
      }
      gather(x, s, p, buf);
      params[p] = clipped(buf, st, s);
    }
  });
  return params;
}

}  // namespace

}  // namespace slimgrad::quant

namespace slimgrad::quant {

// Blocks are independent: fixed chunks of 1024 blocks (32K values) per item.
// Each run of 16 blocks (2 KiB) is checked for NaN/inf just before it is
// quantized, so the quantizer reads it from L1, and the check's prefetch
// (2 KiB ahead) brings in the next run while this one's codes are computed:
// memory and arithmetic overlap. (Checking a whole chunk first, then
// quantizing it from L2, left them in turn: on an Intel Xeon VM the check
// was 40 % of a Q4_0 call's samples, docs/quant.md.) A chunk stops at its
// first non-finite value; the caller drops the output.
std::ptrdiff_t gguf_quantize(GgufType type, const float* x, std::size_t n_blocks, std::uint8_t* out) {
  const std::size_t ts = gguf_type_size(type);
  constexpr std::size_t kBlocks = 1024, kRun = 16;
  std::vector<std::size_t> first(num_chunks(n_blocks, kBlocks), kNone);
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_chunks(n_blocks, kBlocks, [&](std::size_t b, std::size_t e) {
      for (std::size_t r = b; r < e; r += kRun) {
        const std::size_t blocks = std::min(kRun, e - r);
        const float* xr = x + kGgufBlock * r;
        const std::size_t n = kGgufBlock * blocks;
        const std::size_t k = kernels::find_nonfinite<I, float>(xr, n);
        if (k < n) {
          first[b / kBlocks] = kGgufBlock * r + k;
          return;
        }
        kernels::gguf_quantize<I>(static_cast<int>(type), xr, blocks, out + ts * r);
      }
    });
  });
  const std::size_t bad = first.empty() ? kNone : *std::min_element(first.begin(), first.end());
  return bad == kNone ? -1 : static_cast<std::ptrdiff_t>(bad);
}

void gguf_dequantize(GgufType type, const std::uint8_t* in, std::size_t n_blocks, float* out) {
  const std::size_t ts = gguf_type_size(type);
  dispatch([&](auto isa) {
    parallel_chunks(n_blocks, 1024, [&](std::size_t b, std::size_t e) {
      kernels::gguf_dequantize<decltype(isa)::value>(static_cast<int>(type), in + ts * b, e - b,
                                                     out + kGgufBlock * b);
    });
  });
}

}  // namespace slimgrad::quant

namespace slimgrad::quant {

// VNNI is an ISA level (isa.cpp), so use_isa("avx512") can force the plain
// AVX-512 path on a VNNI machine.
bool has_avx512_vnni() { return isa_active_at_least(Isa::avx512_vnni); }

void qmatmul(const float* x, std::size_t batch, const Spec& s, const std::uint8_t* data, const float* scale,
             const std::int32_t* zero_point, float* y) {
  kernels::QMatmulArgs a;
  a.x = x;
  a.batch = batch;
  a.in = s.cols;
  a.out = s.rows;
  a.w = data;
  a.row_bytes = s.row_bytes();
  a.bits = s.bits;
  a.is_signed = s.symmetric;
  a.scale = scale;
  a.zp = zero_point;
  if (s.layout == Layout::groups) {
    a.group_size = s.group_size;
    a.n_groups = s.n_groups();
    a.param_stride = a.n_groups;
  } else {  // per tensor (one parameter) or per row (channels along axis 0)
    a.group_size = std::max<std::size_t>(s.cols, 1);
    a.n_groups = s.cols ? 1 : 0;
    a.param_stride = s.channels == 1 ? 0 : 1;
  }
  a.y = y;
  if (s.rows == 0 || batch == 0) return;
  std::vector<float> xp, xsum;
  if (batch == 1) {
    // x per group in 32-chunks (zero-padded), even then odd elements for 4
    // bits; and the group sums for the zero-point correction.
    const std::size_t per_group = (a.group_size + 31) / 32 * 32;
    xp.assign(a.n_groups * per_group, 0.0f);
    xsum.assign(a.n_groups, 0.0f);
    for (std::size_t g = 0; g < a.n_groups; ++g) {
      const std::size_t j0 = g * a.group_size, j1 = std::min(s.cols, j0 + a.group_size);
      float sum = 0.0f;
      for (std::size_t j = j0; j < j1; ++j) {
        const std::size_t t = (j - j0) % 32, c = (j - j0) - t;
        const std::size_t slot = s.bits == 4 ? (t % 2 ? 16 + t / 2 : t / 2) : t;
        xp[g * per_group + c + slot] = x[j];
        sum += x[j];
      }
      xsum[g] = sum;
    }
    a.xp = xp.data();
    a.xsum = xsum.data();
  }
  if (s.cols == 0) {
    std::fill(y, y + batch * s.rows, 0.0f);
    return;
  }
  // Below kSerialMacs multiply-adds the product stays on the calling thread:
  // waking a PASSIVE worker costs more than the work (Zen 5 VM, int8 per
  // channel, 384x384 at batch 1: 38 us on 2 threads, 9 us on 1).
  constexpr std::size_t kSerialMacs = std::size_t(1) << 21;
  dispatch([&](auto isa) {
    // batched: chunks of 32 rows = whole panels of the avx512 kernel (2 x 16)
    const std::size_t grain = batch == 1 ? 16 : 32;
    const auto chunk = [&](std::size_t b, std::size_t e) {
      thread_local std::vector<float> scratch;  // kept between calls: no page faults per chunk
      if (batch > 1 && scratch.size() < 64 * s.cols) scratch.resize(64 * s.cols);
      kernels::qmatmul_rows<decltype(isa)::value>(a, b, e, scratch.data());
    };
    parallel_chunks_if(batch * s.rows * s.cols >= kSerialMacs, s.rows, grain, chunk);
  });
}

namespace {

// a into S8Tiles's layout: 16-row blocks [b0, b1).
void pack_s8_tiles(const std::int8_t* a, std::size_t M, std::size_t K, std::size_t b0, std::size_t b1,
                   std::int8_t* tiles) {
  const std::size_t kp = S8Tiles::kpad(K);
  for (std::size_t blk = b0; blk < b1; ++blk) {
    std::int8_t* dst = tiles + blk * 16 * kp;
    std::fill(dst, dst + 16 * kp, std::int8_t{0});
    for (std::size_t r = 0; r < 16 && blk * 16 + r < M; ++r) {
      const std::int8_t* row = a + (blk * 16 + r) * K;
      std::size_t k = 0;
      for (; k + 4 <= K; k += 4) std::memcpy(dst + k * 16 + r * 4, row + k, 4);
      std::memcpy(dst + k * 16 + r * 4, row + k, K - k);
    }
  }
}

}  // namespace

void matmul_s8(const std::int8_t* a, std::size_t M, const std::int8_t* b, std::size_t N, std::size_t K,
               std::int32_t* c) {
  if (M == 0 || N == 0) return;
  // AMX tiles beat the VNNI kernel at every row count measured (1-512 rows
  // of a, 4096 x 4096 and all-MiniLM-L6-v2's shapes: 1.0-4.7x, docs/quant.md)
  if (isa_active_at_least(Isa::amx) && K > 0) {
    // up to 4 MiB (256 rows of K = 16384) kept between calls: no page faults
    // per call; a larger a gets a buffer of its own, freed on return
    constexpr std::size_t kKeep = std::size_t{4} << 20;
    thread_local std::vector<std::int8_t> kept;
    std::vector<std::int8_t> own;
    const std::size_t bytes = S8Tiles::bytes(M, K);
    std::vector<std::int8_t>& tiles = bytes <= kKeep ? kept : own;
    if (tiles.size() < bytes) tiles.resize(bytes);
    std::int8_t* tp = tiles.data();
    parallel_chunks((M + 15) / 16, 1, [&](std::size_t lo, std::size_t hi) { pack_s8_tiles(a, M, K, lo, hi, tp); });
    dispatch([&](auto isa) {
      // blocks of 32 columns (two tiles of rows of b), all rows of a each
      parallel_chunks((N + 31) / 32, 1, [&](std::size_t lo, std::size_t hi) {
        kernels::matmul_s8_cols<decltype(isa)::value>(a, M, b, K, lo * 32, std::min(N, hi * 32), nullptr, c, N,
                                                     nullptr, tp);
      });
    });
    return;
  }
  if (has_avx512_vnni() && M >= kernels::kS8PanelRows) {
    // blocks of 64 columns, all rows of a each: the block's rows of b are
    // packed once into strips (kernels::s8_vnni)
    dispatch([&](auto isa) {
      parallel_chunks((N + 63) / 64, 1, [&](std::size_t lo, std::size_t hi) {
        kernels::matmul_s8_cols<decltype(isa)::value>(a, M, b, K, lo * 64, std::min(N, hi * 64), nullptr, c, N,
                                                     nullptr, nullptr);
      });
    });
    return;
  }
  constexpr std::size_t kM = 64;  // rows of a per item; columns come in blocks of 4
  const std::size_t nb = (N + 3) / 4, mb = (M + kM - 1) / kM;
  dispatch([&](auto isa) {
    parallel_chunks(nb * mb, 1, [&](std::size_t lo, std::size_t hi) {
      std::vector<std::int16_t> scratch(4 * K);
      for (std::size_t item = lo; item < hi; ++item) {
        const std::size_t n0 = (item % nb) * 4, m0 = (item / nb) * kM;
        kernels::matmul_s8_cols<decltype(isa)::value>(a + m0 * K, std::min(kM, M - m0), b, K, n0,
                                                     std::min(N, n0 + 4), nullptr, c + m0 * N, N, scratch.data(),
                                                     nullptr);
      }
    });
  });
}

}  // namespace slimgrad::quant
