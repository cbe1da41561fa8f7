// Threaded, dispatched entry points of the transformer and calibration kernels
// (see transformer.hpp). Chunk boundaries depend on the shape only, and every
// reduction adds its partials in a fixed order: identical results for any
// thread count.
#include "slimgrad/transformer.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "slimgrad/threading.hpp"

namespace slimgrad {

namespace {

// Rows per chunk of a row-wise kernel: about kDefaultGrain elements.
std::size_t row_grain(std::size_t n) { return std::max<std::size_t>(1, kDefaultGrain / std::max<std::size_t>(n, 1)); }

// Rows per block of a column reduction: at least kDefaultGrain / 2 elements,
// at most 64 blocks (the partials are n doubles per block).
std::size_t reduce_rows(std::size_t rows, std::size_t n) {
  const std::size_t by_size = std::max<std::size_t>(1, (kDefaultGrain / 2) / std::max<std::size_t>(n, 1));
  const std::size_t by_blocks = (rows + 63) / 64;
  return std::max(by_size, by_blocks);
}

}  // namespace

// ----------------------------------------------------------- LayerNorm
void layer_norm_forward(const float* x, float* y, std::size_t rows, std::size_t n, const float* w, const float* b,
                        float eps, float* mean, float* rstd) {
  dispatch([&](auto isa) {
    parallel_for(rows, row_grain(n), [&](std::size_t r0, std::size_t r1) {
      kernels::layer_norm_rows<decltype(isa)::value>(x + r0 * n, y + r0 * n, r1 - r0, n, w, b, eps, mean + r0,
                                                     rstd + r0);
    });
  });
}

void layer_norm_backward(const float* x, const float* dy, float* dx, std::size_t rows, std::size_t n,
                         const float* w, const float* mean, const float* rstd, float* grad_w, float* grad_b) {
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    if (grad_w || grad_b) {  // before dx: dx may alias dy
      const std::size_t rb = reduce_rows(rows, n), blocks = num_chunks(rows, rb);
      std::vector<double> parts(blocks * 2 * n, 0.0);
      parallel_for(rows, rb, [&](std::size_t r0, std::size_t r1) {
        double* gw = parts.data() + (r0 / rb) * 2 * n;
        kernels::layer_norm_param_grad<I>(x + r0 * n, dy + r0 * n, r1 - r0, n, mean + r0, rstd + r0, gw, gw + n);
      });
      for (std::size_t j = 0; j < n; ++j) {
        double sw = 0.0, sb = 0.0;
        for (std::size_t k = 0; k < blocks; ++k) {
          sw += parts[k * 2 * n + j];
          sb += parts[k * 2 * n + n + j];
        }
        if (grad_w) grad_w[j] = static_cast<float>(sw);
        if (grad_b) grad_b[j] = static_cast<float>(sb);
      }
    }
    parallel_for(rows, row_grain(n), [&](std::size_t r0, std::size_t r1) {
      kernels::layer_norm_input_grad<I>(x + r0 * n, dy + r0 * n, dx + r0 * n, r1 - r0, n, w, mean + r0, rstd + r0);
    });
  });
}

// ------------------------------------------------------ Masked softmax
void masked_softmax_forward(const float* s, float* p, std::size_t batch, std::size_t group, std::size_t n,
                            const std::uint8_t* keep, float scale) {
  std::vector<float> bias;  // keep as an additive 0 / -inf row per batch element
  if (keep) {
    bias.resize(batch * n);
    for (std::size_t i = 0; i < batch * n; ++i) bias[i] = keep[i] ? 0.0f : -std::numeric_limits<float>::infinity();
  }
  const std::size_t rows = batch * group;
  dispatch([&](auto isa) {
    parallel_for(rows, row_grain(n), [&](std::size_t r0, std::size_t r1) {
      while (r0 < r1) {  // split the chunk where the batch element (hence the mask) changes
        const std::size_t bi = r0 / group, end = std::min(r1, (bi + 1) * group);
        kernels::softmax_rows<decltype(isa)::value>(s + r0 * n, p + r0 * n, end - r0, n,
                                                    keep ? bias.data() + bi * n : nullptr, scale);
        r0 = end;
      }
    });
  });
}

void masked_softmax_backward(const float* p, const float* dp, float* ds, std::size_t rows, std::size_t n,
                             float scale) {
  dispatch([&](auto isa) {
    parallel_for(rows, row_grain(n), [&](std::size_t r0, std::size_t r1) {
      kernels::softmax_backward_rows<decltype(isa)::value>(p + r0 * n, dp + r0 * n, ds + r0 * n, r1 - r0, n, scale);
    });
  });
}

// ------------------------------------------------- Attention products
namespace {
// Below this many multiply-adds the products run on the calling thread
// (as the sparse products: waking the team costs more).
constexpr std::size_t kMinParallelAttention = std::size_t{1} << 20;

// body(b, h) for every (batch element, head): one task each, handed out
// dynamically; each writes only its own outputs, so the bits never depend
// on the thread count.
template <class Body>
void over_heads(std::size_t batch, std::size_t heads, std::size_t work, Body&& body) {
  auto task = [&](std::size_t t) { body(t / heads, t % heads); };
  if (work >= kMinParallelAttention) return parallel_tasks(batch * heads, task);
  for (std::size_t t = 0; t < batch * heads; ++t) task(t);
}
}  // namespace

void attention_scores(const float* a, const float* c, std::size_t batch, std::size_t seq, std::size_t heads,
                      std::size_t d, float* scores) {
  const std::size_t e = heads * d;
  dispatch([&](auto isa) {
    over_heads(batch, heads, batch * heads * seq * seq * d, [&](std::size_t b, std::size_t h) {
      // c_h^T as the product's B (d rows of seq): a transposed copy per task,
      // 4 KB for MiniLM's heads, so that B's rows are contiguous.
      thread_local std::vector<float> ct;
      ct.resize(d * seq);
      const float* ch = c + b * seq * e + h * d;
      for (std::size_t j = 0; j < seq; ++j)
        for (std::size_t t = 0; t < d; ++t) ct[t * seq + j] = ch[j * e + t];
      kernels::head_product<decltype(isa)::value>(a + b * seq * e + h * d, e, 1, ct.data(), seq, seq, d, seq,
                                                  scores + (b * heads + h) * seq * seq, seq);
    });
  });
}

void attention_context(const float* p, bool transpose, const float* v, std::size_t batch, std::size_t seq,
                       std::size_t heads, std::size_t d, float* out) {
  const std::size_t e = heads * d;
  dispatch([&](auto isa) {
    over_heads(batch, heads, batch * heads * seq * seq * d, [&](std::size_t b, std::size_t h) {
      const float* ph = p + (b * heads + h) * seq * seq;
      kernels::head_product<decltype(isa)::value>(ph, transpose ? 1 : seq, transpose ? seq : 1,
                                                  v + b * seq * e + h * d, e, seq, seq, d, out + b * seq * e + h * d,
                                                  e);
    });
  });
}

// ---------------------------------------------------------- Calibration
namespace {

// Rows packed at once: kHessianSub blocks of kHessianKc rows (a few MiB of
// panels for d = 1536): one packing pass (a parallel region) per 1024 rows.
constexpr std::size_t kHessianSub = 4;
// A panels per cache block: 16 x MR x kHessianKc floats (192 KiB on AVX-512).
constexpr std::size_t kHessianPanels = 16;

// Panels of `width` columns of rows [0, s) of x, zero-padded to `width`:
// panel p holds x[k][p * width + c] at pack[p * s * width + k * width + c].
// With stats, also adds |x| and x^2 of each column (rows in order).
void pack_panel(const float* x, std::size_t s, std::size_t d, std::size_t width, std::size_t p, float* pack,
                double* abs_sum, double* sq_sum) {
  const std::size_t c0 = p * width, cols = std::min(width, d - c0);
  float* dst = pack + p * s * width;
  for (std::size_t k = 0; k < s; ++k) {
    const float* src = x + k * d + c0;
    for (std::size_t c = 0; c < cols; ++c) dst[k * width + c] = src[c];
    for (std::size_t c = cols; c < width; ++c) dst[k * width + c] = 0.0f;
  }
  if (abs_sum || sq_sum) {  // row by row (contiguous), rows in order per column
    double sa[64] = {}, sq[64] = {};  // width <= 64 (the widest tile is 32)
    for (std::size_t k = 0; k < s; ++k)
      for (std::size_t c = 0; c < cols; ++c) {
        const double v = dst[k * width + c];
        sa[c] += std::fabs(v);
        sq[c] += v * v;
      }
    for (std::size_t c = 0; c < cols; ++c) {
      if (abs_sum) abs_sum[c0 + c] += sa[c];
      if (sq_sum) sq_sum[c0 + c] += sq[c];
    }
  }
}

// Walks the register tiles of x^T x on or above the diagonal. Per block of
// up to kHessianKc * kHessianSub rows it packs x into panels (once, in
// parallel; the channel sums too), then calls, in one parallel region,
//   tile(t, ip, jp, a, b, kc)  for every slice of kHessianKc rows
// of every task t (one block of kHessianPanels A panels ip against one
// column panel jp; in the task, per slice, the B sub-panel (kc x NR, L1)
// streams past the block's A panels, as in GotoBLAS), then done(t, ib, jp)
// once the task's slices are all seen. A region costs a futex wake-up of
// every worker with OMP_WAIT_POLICY=PASSIVE: one per slice and A block, as
// before, took 2 threads longer than 1 for d = 384. Tasks go block-major (a
// thread's next task reuses the A block in its L2), widest column panel
// first (the triangle's long tasks start early). A task's work does not
// depend on the thread count: the callers' sums do not either.
// The tasks of for_each_tile for width d: blocks of A panels x column panels.
template <Isa I>
std::size_t tile_tasks(std::size_t d) {
  const std::size_t mp = (d + kernels::HessianTile<I>::mr - 1) / kernels::HessianTile<I>::mr;
  const std::size_t np = (d + kernels::HessianTile<I>::nr - 1) / kernels::HessianTile<I>::nr;
  return (mp + kHessianPanels - 1) / kHessianPanels * np;
}

template <Isa I, class Tile, class Done>
void for_each_tile(const float* x, std::size_t n, std::size_t d, double* abs_sum, double* sq_sum, Tile&& tile,
                   Done&& done) {
  constexpr std::size_t MR = kernels::HessianTile<I>::mr, NR = kernels::HessianTile<I>::nr;
  const std::size_t mp = (d + MR - 1) / MR, np = (d + NR - 1) / NR, super = kHessianKc * kHessianSub;
  // Packing buffers are kept per calling thread and only grow: fresh multi-MiB
  // allocations each call cost a page fault per 4 KiB (measured: 10x the
  // arithmetic for d = 320 on this VM). At most (d + NR) * 2 * 1024 floats.
  // (Plain pointers below: a lambda run by a worker thread would otherwise
  // name that worker's own thread_local vectors.)
  thread_local std::vector<float> a_buf, b_buf;
  a_buf.resize(std::max(a_buf.size(), mp * MR * std::min(n, super)));
  b_buf.resize(std::max(b_buf.size(), np * NR * std::min(n, super)));
  float* const apack = a_buf.data();
  float* const bpack = b_buf.data();
  for (std::size_t k0 = 0; k0 < n; k0 += super) {
    const std::size_t s = std::min(super, n - k0);
    const float* xs = x + k0 * d;
    parallel_tasks(mp + np, [&](std::size_t t) {
      if (t < np)
        pack_panel(xs, s, d, NR, t, bpack, abs_sum, sq_sum);
      else
        pack_panel(xs, s, d, MR, t - np, apack, nullptr, nullptr);
    });
    parallel_tasks(tile_tasks<I>(d), [&](std::size_t t) {
      const std::size_t ib = t / np * kHessianPanels, jp = np - 1 - t % np;
      const std::size_t col0 = jp * NR, cols = std::min(NR, d - col0);
      const std::size_t ip_end = std::min({mp, ib + kHessianPanels, (col0 + cols - 1) / MR + 1});  // to the diagonal
      for (std::size_t c = 0; c * kHessianKc < s; ++c) {
        const std::size_t kc = std::min(kHessianKc, s - c * kHessianKc);
        const float* b = bpack + jp * s * NR + c * kHessianKc * NR;
        for (std::size_t ip = ib; ip < ip_end; ++ip) tile(t, ip, jp, apack + ip * s * MR + c * kHessianKc * MR, b, kc);
      }
      done(t, ib, std::max(ib, ip_end), jp);
    });
  }
}

template <Isa I, class T>
void hessian_run(const float* x, std::size_t n, std::size_t d, T* h, double* abs_sum, double* sq_sum) {
  constexpr std::size_t MR = kernels::HessianTile<I>::mr, NR = kernels::HessianTile<I>::nr;
  // Each H element is written by one task, its slice partials added in row
  // order: the same bits for any thread count.
  for_each_tile<I>(
      x, n, d, abs_sum, sq_sum,
      [&](std::size_t, std::size_t ip, std::size_t jp, const float* a, const float* b, std::size_t kc) {
        const std::size_t row0 = ip * MR, col0 = jp * NR;
        kernels::hessian_tile<I, T>(a, b, kc, h + row0 * d + col0, d, std::min(MR, d - row0), std::min(NR, d - col0));
      },
      [](std::size_t, std::size_t, std::size_t, std::size_t) {});
  // Mirror the upper triangle (tiles crossing the diagonal also wrote some
  // lower elements; the mirror overwrites them with the upper values), in
  // 64 x 64 blocks: a row-by-row copy read h's columns at a stride of d and
  // missed the cache on every element (12 ms per call for d = 1536, more
  // than the arithmetic of 384 rows); a block's 64 source rows stay in L1.
  constexpr std::size_t kBlock = 64;
  parallel_tasks((d + kBlock - 1) / kBlock, [&](std::size_t ib) {
    const std::size_t i0 = ib * kBlock, i1 = std::min(d, i0 + kBlock);
    for (std::size_t j0 = 0; j0 < i1; j0 += kBlock)
      for (std::size_t i = i0; i < i1; ++i)
        for (std::size_t j = j0, j1 = std::min(i, j0 + kBlock); j < j1; ++j) h[i * d + j] = h[j * d + i];
  });
}

template <Isa I>
double hessian_inner_run(const float* x, std::size_t n, std::size_t d, const double* h) {
  constexpr std::size_t MR = kernels::HessianTile<I>::mr, NR = kernels::HessianTile<I>::nr;
  // Per task, its tiles of x^T x for the block of rows (float32 within a
  // slice, summed into float64 across slices, as hessian_accumulate) in a
  // scratch of the task's own; then the tiles' weighted products with H's
  // upper triangle: 1 on the diagonal, 2 above it, 0 below. One partial per
  // task, added in task order at the end: the same bits for any thread count.
  std::vector<double> partial(tile_tasks<I>(d), 0.0);
  // Named inside the lambdas on purpose: each worker thread uses its own
  // (zeroed once, and again by each task after use).
  thread_local std::vector<double> scratch_buf;
  for_each_tile<I>(
      x, n, d, nullptr, nullptr,
      [&](std::size_t, std::size_t ip, std::size_t jp, const float* a, const float* b, std::size_t kc) {
        if (scratch_buf.size() < kHessianPanels * MR * NR) scratch_buf.assign(kHessianPanels * MR * NR, 0.0);
        const std::size_t row0 = ip * MR, col0 = jp * NR;
        double* tile = scratch_buf.data() + (ip % kHessianPanels) * MR * NR;
        kernels::hessian_tile<I, double>(a, b, kc, tile, NR, std::min(MR, d - row0), std::min(NR, d - col0));
      },
      [&](std::size_t t, std::size_t ib, std::size_t ip_end, std::size_t jp) {
        double sum = 0.0;
        for (std::size_t ip = ib; ip < ip_end; ++ip) {
          double* tile = scratch_buf.data() + (ip % kHessianPanels) * MR * NR;
          const std::size_t row0 = ip * MR, col0 = jp * NR;
          for (std::size_t r = 0; r < std::min(MR, d - row0); ++r)
            for (std::size_t c = 0; c < std::min(NR, d - col0); ++c) {
              const std::size_t i = row0 + r, j = col0 + c;
              if (j >= i) sum += (j > i ? 2.0 : 1.0) * h[i * d + j] * tile[r * NR + c];
            }
          std::fill(tile, tile + MR * NR, 0.0);  // ready for the next task
        }
        partial[t] += sum;
      });
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace

template <class T>
void hessian_accumulate(const float* x, std::size_t n, std::size_t d, T* h, double* abs_sum, double* sq_sum) {
  if (n == 0 || d == 0) return;
  dispatch([&](auto isa) { hessian_run<decltype(isa)::value, T>(x, n, d, h, abs_sum, sq_sum); });
}

template void hessian_accumulate<float>(const float*, std::size_t, std::size_t, float*, double*, double*);
template void hessian_accumulate<double>(const float*, std::size_t, std::size_t, double*, double*, double*);

double hessian_inner(const float* x, std::size_t n, std::size_t d, const double* h) {
  if (n == 0 || d == 0) return 0.0;
  double total = 0.0;
  dispatch([&](auto isa) { total = hessian_inner_run<decltype(isa)::value>(x, n, d, h); });
  return total;
}

}  // namespace slimgrad
