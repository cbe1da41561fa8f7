// Threaded, dispatched, multi-tensor entry points of the extra optimizer
// kernels (see optim_extra.hpp).
//
// A list of arrays becomes the core's work plan (plan_work in threading.hpp:
// pieces of at most kGrain elements, depending only on the sizes); pieces
// write their own slots, and reductions add piece partials in piece order. So every result,
// including LAMB's trust ratios and the clip norm, is identical for any
// thread count.
#include "slimgrad/optim_extra.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "slimgrad/core.hpp"
#include "slimgrad/optim.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad {
namespace {

template <class T>
T torch_lerp(T a, T b, T w) {
  return w < T(0.5) ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

// f(isa, t, piece t) for every piece of the plan, on the active ISA.
template <class F>
void for_pieces(const WorkPlan& plan, F&& f) {
  dispatch([&](auto isa) { run_plan(plan, [&](std::size_t t, const Piece& it) { f(isa, t, it); }); });
}

}  // namespace

template <class T>
void lamb_step(T* const* p, const T* const* g, T* const* m, T* const* v, const std::size_t* sizes,
               std::size_t count, const LambCoef<T>& c, T lr, double* ratios) {
  const WorkPlan plan = plan_work(sizes, count);
  std::vector<double> partial(2 * plan.pieces.size(), 0.0);
  for_pieces(plan, [&](auto isa, std::size_t t, const Piece& it) {
    const std::size_t o = it.begin;
    kernels::lamb_moments<decltype(isa)::value, T>(p[it.array] + o, g[it.array] + o, m[it.array] + o,
                                                    v[it.array] + o, it.end - o, c, &partial[2 * t]);
  });
  // Per-array norms, item partials added in order.
  std::vector<double> pn(count, 0.0), rn(count, 0.0);
  for (std::size_t t = 0; t < plan.pieces.size(); ++t) {
    pn[plan.pieces[t].array] += partial[2 * t];
    rn[plan.pieces[t].array] += partial[2 * t + 1];
  }
  std::vector<T> lr_ratio(count);
  for (std::size_t a = 0; a < count; ++a) {
    const double wn = std::sqrt(pn[a]), un = std::sqrt(rn[a]);
    // The paper's phi is the identity; a zero norm (fresh zero init, or a
    // zero update) would make the ratio 0 or inf, so it is 1 there.
    const double ratio = (wn > 0.0 && un > 0.0) ? wn / un : 1.0;
    if (ratios) ratios[a] = ratio;
    lr_ratio[a] = static_cast<T>(static_cast<double>(lr) * ratio);
  }
  for_pieces(plan, [&](auto isa, std::size_t, const Piece& it) {
    const std::size_t o = it.begin;
    kernels::lamb_apply<decltype(isa)::value, T>(p[it.array] + o, m[it.array] + o, v[it.array] + o, it.end - o,
                                                  c, lr_ratio[it.array]);
  });
}

template <class T>
void adamw8bit_step(T* const* p, const T* const* g, std::int8_t* const* m, std::uint8_t* const* v,
                    float* const* ms, float* const* vs, const std::size_t* sizes, std::size_t count,
                    const Adam8Coef<T>& c) {
  static_assert(kGrain % kQuantBlock == 0, "items must start on a quantization block");
  const WorkPlan plan = plan_work(sizes, count);
  for_pieces(plan, [&](auto isa, std::size_t, const Piece& it) {
    const std::size_t o = it.begin, a = it.array;
    kernels::adamw8bit<decltype(isa)::value, T>(p[a] + o, g[a] + o, m[a] + o, v[a] + o, ms[a] + o / kQuantBlock,
                                                 vs[a] + o / kQuantBlock, it.end - o, c);
  });
}

void quantize_moment(const float* x, void* codes, float* scales, std::size_t n, bool is_signed) {
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      if (is_signed)
        kernels::quantize_signed<I>(x + b, static_cast<std::int8_t*>(codes) + b, scales + b / kQuantBlock, e - b);
      else
        kernels::quantize_unsigned<I>(x + b, static_cast<std::uint8_t*>(codes) + b, scales + b / kQuantBlock,
                                      e - b);
    });
  });
}

void dequantize_moment(const void* codes, const float* scales, float* x, std::size_t n, bool is_signed) {
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      if (is_signed)
        kernels::dequantize_signed<I>(static_cast<const std::int8_t*>(codes) + b, scales + b / kQuantBlock, x + b,
                                      e - b);
      else
        kernels::dequantize_unsigned<I>(static_cast<const std::uint8_t*>(codes) + b, scales + b / kQuantBlock,
                                        x + b, e - b);
    });
  });
}

namespace {

// The norm partial of one piece of n elements (sum of |x|^q, or max |x|).
template <Isa I, class T>
double piece_norm(const T* x, std::size_t n, double norm_type) {
  if (std::isinf(norm_type)) return kernels::max_abs<I, T>(x, n);
  if (norm_type == 2.0) return kernels::sum_squares<I, T>(x, n);
  if (norm_type == 1.0) return kernels::sum_abs<I, T>(x, n);
  return kernels::sum_abs_pow<I, T>(x, n, norm_type);
}

// The total from the piece partials, added in piece order (max for inf, a
// NaN partial giving NaN): the same for any thread count.
double combine_norm(const std::vector<double>& partial, double norm_type) {
  double total = 0.0;
  if (std::isinf(norm_type)) {
    for (double v : partial) {
      if (std::isnan(v)) return v;
      total = std::max(total, v);
    }
    return total;
  }
  for (double v : partial) total += v;
  if (norm_type == 2.0) return std::sqrt(total);
  if (norm_type == 1.0) return total;
  return std::pow(total, 1.0 / norm_type);
}

}  // namespace

template <class T>
double total_norm(const T* const* x, const std::size_t* sizes, std::size_t count, double norm_type) {
  const WorkPlan plan = plan_work(sizes, count);
  std::vector<double> partial(plan.pieces.size(), 0.0);
  for_pieces(plan, [&](auto isa, std::size_t t, const Piece& it) {
    partial[t] = piece_norm<decltype(isa)::value, T>(x[it.array] + it.begin, it.end - it.begin, norm_type);
  });
  return combine_norm(partial, norm_type);
}

double total_norm_half(const std::uint16_t* const* x, const std::size_t* sizes, std::size_t count,
                       double norm_type, bool bf16) {
  const WorkPlan plan = plan_work(sizes, count);
  std::vector<double> partial(plan.pieces.size(), 0.0);
  for_pieces(plan, [&](auto isa, std::size_t t, const Piece& it) {
    constexpr Isa I = decltype(isa)::value;
    // The piece widened (exactly) into a per-thread buffer that stays in
    // cache, then the float32 reduction: the norm of half gradients is the
    // float32 norm of their widened values, piece for piece.
    thread_local std::vector<float> wide;
    const std::size_t n = it.end - it.begin;
    if (wide.size() < n) wide.resize(kGrain);
    kernels::widen_half<I>(x[it.array] + it.begin, wide.data(), n, bf16);
    partial[t] = piece_norm<I, float>(wide.data(), n, norm_type);
  });
  return combine_norm(partial, norm_type);
}

namespace {
// One elementwise kernel over every array's pieces: x *= s, x clamped to
// [-s, s], or x += s * g.
enum class Elementwise { scale, clamp, accumulate };

template <class T>
void elementwise_all(Elementwise op, T* const* x, const T* const* g, const std::size_t* sizes, std::size_t count,
                     T s) {
  const WorkPlan plan = plan_work(sizes, count);
  for_pieces(plan, [&](auto isa, std::size_t, const Piece& it) {
    constexpr Isa I = decltype(isa)::value;
    T* const xp = x[it.array] + it.begin;
    const std::size_t n = it.end - it.begin;
    if (op == Elementwise::scale)
      kernels::scale<I, T>(xp, n, s);
    else if (op == Elementwise::clamp)
      kernels::clamp_abs<I, T>(xp, n, s);
    else
      kernels::accumulate<I, T>(xp, g[it.array] + it.begin, n, s);
  });
}
}  // namespace

template <class T>
void scale_all(T* const* x, const std::size_t* sizes, std::size_t count, T s) {
  elementwise_all<T>(Elementwise::scale, x, nullptr, sizes, count, s);
}
template <class T>
void clamp_all(T* const* x, const std::size_t* sizes, std::size_t count, T c) {
  elementwise_all<T>(Elementwise::clamp, x, nullptr, sizes, count, c);
}
template <class T>
void accumulate_all(T* const* acc, const T* const* g, const std::size_t* sizes, std::size_t count, T s) {
  elementwise_all<T>(Elementwise::accumulate, acc, g, sizes, count, s);
}

// ----------------------------------------------------------- Adafactor
namespace {
// Tiles of a (rows, cols) matrix: kTileRows rows by up to kGrain /
// kTileRows columns; fixed by the shape alone.
constexpr std::size_t kTileRows = 32;
constexpr std::size_t kTileCols = kGrain / kTileRows;

struct Tile {
  std::size_t rb, cb, r0, r1, c0, c1;
};
std::vector<Tile> make_tiles(std::size_t rows, std::size_t cols) {
  std::vector<Tile> tiles;
  for (std::size_t r = 0, rb = 0; r < rows; r += kTileRows, ++rb)
    for (std::size_t c = 0, cb = 0; c < cols; c += kTileCols, ++cb)
      tiles.push_back({rb, cb, r, std::min(rows, r + kTileRows), c, std::min(cols, c + kTileCols)});
  return tiles;
}
}  // namespace

template <class T>
void adafactor_step(T* p, const T* g, T* row_var, T* col_var, T* var, std::size_t batch, std::size_t rows,
                    std::size_t cols, bool factored, const AdafactorArgs& a) {
  const std::size_t n = factored ? batch * rows * cols : batch;
  const T eps1sq = static_cast<T>(a.eps1 * a.eps1);
  const T w = static_cast<T>(a.beta2_weight);
  const T decay = static_cast<T>(1.0 - a.lr * a.weight_decay);
  // alpha from the parameter's RMS before weight decay (torch's order).
  const T* const pc[1] = {p};
  const std::size_t nn[1] = {n};
  const double p_rms = n ? total_norm<T>(pc, nn, 1, 2.0) / std::sqrt(static_cast<double>(n)) : 0.0;
  const double alpha = std::max(a.eps2, p_rms) * a.rho;
  double u_sq = 0.0;
  if (factored) {
    const auto tiles = make_tiles(rows, cols);
    const std::size_t n_rb = (rows + kTileRows - 1) / kTileRows, n_cb = (cols + kTileCols - 1) / kTileCols;
    std::vector<double> row_part(n_cb * rows), col_part(n_rb * cols);
    std::vector<T> rmean(batch);
    for (std::size_t b = 0; b < batch; ++b) {
      const T* gb = g + b * rows * cols;
      dispatch([&](auto isa) {
        run_tasks(tiles.size(), rows * cols, [&](std::size_t t) {
          const Tile& q = tiles[t];
          kernels::sq_rows_cols<decltype(isa)::value, T>(gb + q.r0 * cols + q.c0, q.r1 - q.r0, q.c1 - q.c0, cols,
                                                          &row_part[q.cb * rows + q.r0],
                                                          &col_part[q.rb * cols + q.c0]);
        });
      });
      T* rv = row_var + b * rows;
      T* cv = col_var + b * cols;
      double rsum = 0.0;
      for (std::size_t r = 0; r < rows; ++r) {
        double s = 0.0;
        for (std::size_t cb = 0; cb < n_cb; ++cb) s += row_part[cb * rows + r];
        rv[r] = torch_lerp(rv[r], static_cast<T>(s / static_cast<double>(cols)), w);
        rsum += static_cast<double>(rv[r]);
      }
      for (std::size_t c = 0; c < cols; ++c) {
        double s = 0.0;
        for (std::size_t rb = 0; rb < n_rb; ++rb) s += col_part[rb * cols + c];
        cv[c] = torch_lerp(cv[c], static_cast<T>(s / static_cast<double>(rows)), w);
      }
      rmean[b] = std::max(static_cast<T>(rsum / static_cast<double>(rows)), static_cast<T>(a.eps1));
    }
    std::vector<double> part(tiles.size());
    for (std::size_t b = 0; b < batch; ++b) {
      const T* gb = g + b * rows * cols;
      dispatch([&](auto isa) {
        run_tasks(tiles.size(), rows * cols, [&](std::size_t t) {
          const Tile& q = tiles[t];
          part[t] = kernels::adafactor_factored_norm<decltype(isa)::value, T>(
              gb + q.r0 * cols + q.c0, row_var + b * rows + q.r0, col_var + b * cols + q.c0, q.r1 - q.r0,
              q.c1 - q.c0, cols, rmean[b], eps1sq, a.maximize);
        });
      });
      for (double v : part) u_sq += v;
    }
    const double denom = std::max(1.0, std::sqrt(u_sq) / (std::sqrt(static_cast<double>(n)) * a.d));
    const T step = static_cast<T>(alpha / denom);
    for (std::size_t b = 0; b < batch; ++b) {
      const std::size_t off = b * rows * cols;
      dispatch([&](auto isa) {
        run_tasks(tiles.size(), rows * cols, [&](std::size_t t) {
          const Tile& q = tiles[t];
          const std::size_t o = off + q.r0 * cols + q.c0;
          kernels::adafactor_factored_apply<decltype(isa)::value, T>(
              p + o, g + o, row_var + b * rows + q.r0, col_var + b * cols + q.c0, q.r1 - q.r0, q.c1 - q.c0, cols,
              rmean[b], eps1sq, a.maximize, decay, step);
        });
      });
    }
    return;
  }
  const std::size_t sizes[1] = {n};
  const WorkPlan plan = plan_work(sizes, 1);
  std::vector<double> part(plan.pieces.size());
  for_pieces(plan, [&](auto isa, std::size_t t, const Piece& it) {
    part[t] = kernels::adafactor_vector_var<decltype(isa)::value, T>(g + it.begin, var + it.begin,
                                                                     it.end - it.begin, w, eps1sq, a.maximize);
  });
  for (double v : part) u_sq += v;
  const double denom = std::max(1.0, std::sqrt(u_sq) / (std::sqrt(static_cast<double>(n)) * a.d));
  const T step = static_cast<T>(alpha / denom);
  for_pieces(plan, [&](auto isa, std::size_t, const Piece& it) {
    kernels::adafactor_vector_apply<decltype(isa)::value, T>(p + it.begin, g + it.begin, var + it.begin,
                                                             it.end - it.begin, eps1sq, a.maximize, decay, step);
  });
}

#define SLIMGRAD_EXTRA_ENTRY(T)                                                                                 \
  template void lamb_step<T>(T* const*, const T* const*, T* const*, T* const*, const std::size_t*, std::size_t, \
                             const LambCoef<T>&, T, double*);                                                   \
  template void adamw8bit_step<T>(T* const*, const T* const*, std::int8_t* const*, std::uint8_t* const*,       \
                                  float* const*, float* const*, const std::size_t*, std::size_t,               \
                                  const Adam8Coef<T>&);                                                         \
  template double total_norm<T>(const T* const*, const std::size_t*, std::size_t, double);                      \
  template void scale_all<T>(T* const*, const std::size_t*, std::size_t, T);                                    \
  template void clamp_all<T>(T* const*, const std::size_t*, std::size_t, T);                                    \
  template void accumulate_all<T>(T* const*, const T* const*, const std::size_t*, std::size_t, T);              \
  template void adafactor_step<T>(T*, const T*, T*, T*, T*, std::size_t, std::size_t, std::size_t, bool,        \
                                  const AdafactorArgs&);
SLIMGRAD_EXTRA_ENTRY(float)
SLIMGRAD_EXTRA_ENTRY(double)
#undef SLIMGRAD_EXTRA_ENTRY

}  // namespace slimgrad
