// Threaded, dispatched entry points of the sparse products (see sparse.hpp).
// Rows of W go to threads in fixed chunks whose size depends on the shape
// only (kSparseRowGrain; up to kPanelRowGrain on the 2:4 panel path), handed
// out dynamically; every
// y entry is computed by one thread in a shape-determined order, so the
// thread count never changes a bit of the result.
#include "slimgrad/sparse.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "slimgrad/threading.hpp"

namespace slimgrad {

namespace {
// Below this many multiply-adds a product runs on the calling thread: waking
// an OpenMP team costs more than it saves (a 384 x 384 batch-1 product is
// ~74K, a few microseconds; a PASSIVE worker takes 5-14 us to wake here).
// 2^19 threaded 384 x 384 at batch 8 (590K): 47-65 us at 2 threads against
// 45-48 us on one. Same chunks either way, so the same bits.
constexpr std::size_t kMinParallelWork = std::size_t{1} << 20;
// Bytes of x panels per batch group of the 2:4 panel path: half of a 1 MB
// L2 (Zen 4, Skylake-SP and later servers), room left for W and y.
constexpr std::size_t kPanelGroupBytes = std::size_t{512} << 10;

// Chunks go to threads dynamically: on this shared machine a thread is often
// descheduled (or a PASSIVE worker late to wake) and a static split made the
// others wait for its half; each chunk writes its own y rows, so the bits do
// not depend on who computes it.
template <class Body>
void over_row_chunks(std::size_t out, std::size_t work, Body&& body, std::size_t grain = kSparseRowGrain) {
  parallel_chunks_if(work >= kMinParallelWork, out, grain, body);
}
}  // namespace

bool positions24_valid(const std::uint8_t* positions, std::size_t kept) {
  // Each byte holds two groups (values 2g, 2g + 1 of a group g share a
  // nibble): a nibble (low position a in bits 0-1, high b in bits 2-3) is
  // valid when a < b. Eight bytes at a time (SWAR): per nibble d = 4 + b - a
  // is in 1..7 (no borrow between nibbles), valid iff d is 5, 6 or 7, i.e.
  // bit 2 set and bits 0-1 not both clear. A plain loop the compiler
  // vectorizes: this check runs on every call, so it must cost far less than
  // the product (about 0.1 ns per byte instead of 1).
  constexpr std::uint64_t k3 = 0x3333333333333333ull, k4 = 0x4444444444444444ull, k1 = 0x1111111111111111ull;
  const std::size_t full = kept / 4, words = full / 8;
  std::uint64_t bad = 0;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t w;
    std::memcpy(&w, positions + 8 * i, 8);
    const std::uint64_t d = (((w >> 2) & k3) | k4) - (w & k3);
    bad |= ~((d >> 2) & (d | (d >> 1))) & k1;
  }
  for (std::size_t i = 8 * words; i < full; ++i) {
    const unsigned b = positions[i];
    bad |= static_cast<unsigned>((b & 3u) >= ((b >> 2) & 3u)) | static_cast<unsigned>(((b >> 4) & 3u) >= (b >> 6));
  }
  if (kept % 4) {  // kept is even: a last half byte (one group), padding above
    const unsigned b = positions[full];
    bad |= static_cast<unsigned>((b & 3u) >= ((b >> 2) & 3u));
  }
  return bad == 0;
}

namespace {
// The threaded frame of both 2:4 layouts. rows(isa, x, xt, nb, r0, r1, y)
// computes y rows [r0, r1) (chunks of kSparseRowGrain or the panel grains,
// the last shorter) for nb batch rows.
template <class Rows>
void gemm24_frame(const float* x, std::size_t batch, std::size_t in, std::size_t out, float* y, Rows&& rows) {
  if (batch == 0 || out == 0) return;
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    // Above 8 rows of x the SIMD kernels read x packed into batch-contiguous
    // panels: packed once here (in parallel over panels), read by every
    // thread. Uninitialized storage: pack_panel writes every entry. Aligned
    // to a cache line: every vector load of a panel stays within one line
    // (malloc's 16-byte alignment split every zmm load across two).
    const std::size_t pw = kernels::gemm24_panel_width<I>();
    const std::size_t panels = pw != 0 && batch > 8 && in != 0 ? (batch + pw - 1) / pw : 0;
    std::unique_ptr<float[], void (*)(void*)> xt(nullptr, std::free);
    if (panels != 0) {
      xt.reset(static_cast<float*>(std::aligned_alloc(64, panels * pw * in * sizeof(float))));
      if (!xt) throw std::bad_alloc();
    }
    // Panels: batch columns in groups of whole panels that fit half an L2
    // (every row chunk reads the group's panels from L2, not L3); a panel
    // larger than that (in > 2048 on AVX-512) gains nothing from groups, and
    // each group re-reads W: then one group. Rows: 128-row chunks when there
    // are at least 8 of them (2 threads stay balanced); else, when a group
    // holds 2 panels or more (small in), a quarter of W (96 rows for 384:
    // each x block serves more rows while in L1; measured 0.8-1.2x -> 1.35x
    // dense at 384x384 batch 512, but slower at 384x1536), else 32.
    const std::size_t panel_bytes = pw * in * sizeof(float);
    const std::size_t group =
        xt && panel_bytes <= kPanelGroupBytes ? kPanelGroupBytes / panel_bytes * pw : batch;
    std::size_t grain = kSparseRowGrain;
    if (xt && out >= 8 * kPanelRowGrain)
      grain = kPanelRowGrain;
    else if (xt && group >= 2 * pw)
      grain = std::clamp(out / 4 / kSparseRowGrain * kSparseRowGrain, kSparseRowGrain, kPanelRowGrain);
    // Packing the panels (one task each), then one task per (batch group,
    // row chunk), group-major, all in one parallel region (parallel_phases):
    // a region per group (8 for 384x1536 at batch 512), or packing in a
    // region of its own, woke the PASSIVE worker and waited at a barrier
    // that many times per call (2 regions: 384x384 at batch 64 ran 143 us
    // on 2 threads against 153 us on one). A thread may start the next
    // group's chunks while the other finishes this group's: both groups'
    // panels then share the L2 briefly.
    const std::size_t chunks = (out + grain - 1) / grain, tasks = (batch + group - 1) / group * chunks;
    auto pack = [&](std::size_t p) { kernels::pack_panel<I>(x, batch, in, pw, p, xt.get() + p * pw * in); };
    auto task = [&](std::size_t t) {
      const std::size_t b0 = t / chunks * group, r0 = t % chunks * grain, nb = std::min(group, batch - b0);
      const float* xg = xt ? xt.get() + b0 * in : nullptr;  // b0 is a multiple of pw: panel b0 / pw
      rows(isa, x + b0 * in, xg, nb, r0, std::min(out, r0 + grain), y + b0 * out);
    };
    parallel_phases(batch * out * (in / 2) >= kMinParallelWork, panels, pack, tasks, task, [] { return true; });
  });
}
}  // namespace

void gemm24(const float* x, std::size_t batch, std::size_t in, const float* values, const std::uint8_t* positions,
            std::size_t out, float* y) {
  gemm24_frame(x, batch, in, out, y,
               [&](auto isa, const float* xb, const float* xt, std::size_t nb, std::size_t r0, std::size_t r1,
                   float* yb) {
                 kernels::gemm24_rows<decltype(isa)::value>(xb, xt, nb, in, values, positions, out, r0, r1, yb);
               });
}

static_assert(kSparseRowGrain % kSliceRows == 0 && kPanelRowGrain % kSliceRows == 0,
              "2:4 slices: row chunks are whole slices");

void pack_24_slices(const float* values, const std::uint8_t* positions, std::size_t out, std::size_t in,
                    float* svalues, std::uint32_t* ctrl) {
  const std::size_t half = in / 2, chunks = slice24_chunks(in), slices = (out + kSliceRows - 1) / kSliceRows;
  std::fill(svalues, svalues + slices * kSliceRows * half, 0.0f);
  std::fill(ctrl, ctrl + slices * chunks * kSliceRows, 0u);
  for (std::size_t r = 0; r < out; ++r) {
    const std::size_t s = r / kSliceRows, lane = r % kSliceRows;
    for (std::size_t k = 0; k < half; ++k) svalues[(s * half + k) * kSliceRows + lane] = values[r * half + k];
    for (std::size_t g = 0; g < in / 4; ++g) {
      const std::size_t v = r * half + 2 * g;  // even: the group's nibble starts at bit 0 or 4
      const std::uint32_t nib = (positions[v >> 2] >> (2 * (v & 3))) & 15u;
      ctrl[(s * chunks + g / kSlice24Groups) * kSliceRows + lane] |= nib << (4 * (g % kSlice24Groups));
    }
  }
}

void gemm24_slices(const float* x, std::size_t batch, std::size_t in, const float* values, const std::uint32_t* ctrl,
                   std::size_t out, float* y) {
  gemm24_frame(x, batch, in, out, y,
               [&](auto isa, const float* xb, const float* xt, std::size_t nb, std::size_t r0, std::size_t r1,
                   float* yb) {
                 // Row chunks are whole slices (kSparseRowGrain and the panel grains are multiples of 16).
                 kernels::gemm24_slices_rows<decltype(isa)::value>(xb, xt, batch > 8, nb, in, values, ctrl, out,
                                                                   r0 / kSliceRows,
                                                                   (r1 + kSliceRows - 1) / kSliceRows, yb);
               });
}

template <class P>
void spmm_csr(const float* x, std::size_t batch, std::size_t in, const float* data, const std::int32_t* cols,
              const P* indptr, std::size_t out, float* y) {
  if (batch == 0 || out == 0) return;
  dispatch([&](auto isa) {
    over_row_chunks(out, batch * static_cast<std::size_t>(indptr[out]), [&](std::size_t r0, std::size_t r1) {
      kernels::spmm_csr_rows<decltype(isa)::value, P>(x, batch, in, data, cols, indptr, out, r0, r1, y);
    });
  });
}

namespace {
// One slice's steps (the packing sparse.hpp defines): each lane's values in
// column order; per window [b, b + kSliceCols), b a multiple of
// kSliceStride from 0, as many steps as the most values a lane still has
// left of b + kSliceStride (rounded up to a multiple of kSliceWindowSteps),
// and at each step every lane takes its next value if it lies in the window.
// order: scratch for the lanes' value indices. Lane l holds W's row
// slice_rows[s * kSliceRows + l] (csr_slice_rows).
// Calls window(step, base) per step and place(step, lane, p) per stored value p;
// returns the slice's steps before padding to a multiple of 4.
template <class P, class Place, class Window>
std::size_t plan_slice(const std::int32_t* cols, const P* indptr, const std::int32_t* slice_rows, std::size_t out,
                       std::size_t in, std::size_t s, std::vector<std::size_t>& order, Place&& place,
                       Window&& window) {
  const std::size_t r0 = s * kSliceRows, rows = std::min(out - r0, kSliceRows);
  std::size_t next[kSliceRows], end[kSliceRows];  // each lane's run in order
  order.clear();
  for (std::size_t lane = 0; lane < rows; ++lane) {
    next[lane] = order.size();
    const auto r = static_cast<std::size_t>(slice_rows[r0 + lane]);
    for (auto p = static_cast<std::size_t>(indptr[r]); p < static_cast<std::size_t>(indptr[r + 1]); ++p)
      order.push_back(p);
    end[lane] = order.size();
    std::stable_sort(order.begin() + static_cast<std::ptrdiff_t>(next[lane]), order.end(),
                     [&](std::size_t a, std::size_t b) { return cols[a] < cols[b]; });
  }
  const auto col = [&](std::size_t i) { return static_cast<std::size_t>(cols[order[i]]); };
  std::size_t t = 0;
  for (std::size_t b = 0; b < in; b += kSliceStride) {
    std::size_t steps = 0;
    for (std::size_t lane = 0; lane < rows; ++lane) {
      std::size_t n = 0;
      while (next[lane] + n < end[lane] && col(next[lane] + n) < b + kSliceStride) ++n;
      steps = std::max(steps, n);
    }
    steps = (steps + kSliceWindowSteps - 1) / kSliceWindowSteps * kSliceWindowSteps;
    for (std::size_t k = 0; k < steps; ++k, ++t) {
      window(t, b);
      for (std::size_t lane = 0; lane < rows; ++lane)
        if (next[lane] < end[lane] && col(next[lane]) < b + kSliceCols) place(t, lane, order[next[lane]++]);
    }
  }
  return t;
}
}  // namespace

template <class P>
bool csr_slice_rows(const std::int32_t* cols, const P* indptr, std::size_t out, std::size_t in, std::int32_t* rows,
                    std::int64_t* starts) {
  std::vector<std::int32_t> sorted(out);
  for (std::size_t r = 0; r < out; ++r) rows[r] = sorted[r] = static_cast<std::int32_t>(r);
  std::stable_sort(sorted.begin(), sorted.end(), [&](std::int32_t a, std::int32_t b) {
    return indptr[a + 1] - indptr[a] > indptr[b + 1] - indptr[b];
  });
  const std::size_t slices = (out + kSliceRows - 1) / kSliceRows;
  std::vector<std::int64_t> by_count(slices + 1);
  csr_slice_starts(cols, indptr, sorted.data(), out, in, by_count.data());
  csr_slice_starts(cols, indptr, rows, out, in, starts);
  if (6 * by_count.back() > 5 * starts[slices]) return false;
  std::copy(sorted.begin(), sorted.end(), rows);
  std::copy(by_count.begin(), by_count.end(), starts);
  return true;
}

template <class P>
void csr_slice_starts(const std::int32_t* cols, const P* indptr, const std::int32_t* rows, std::size_t out,
                      std::size_t in, std::int64_t* starts) {
  const std::size_t slices = (out + kSliceRows - 1) / kSliceRows;
  std::vector<std::size_t> order;
  starts[0] = 0;
  for (std::size_t s = 0; s < slices; ++s) {
    const std::size_t n = plan_slice(cols, indptr, rows, out, in, s, order, [](auto...) {}, [](auto...) {});
    starts[s + 1] = starts[s] + static_cast<std::int64_t>((n + 3) / 4 * 4);
  }
}

template <class P>
void pack_csr_slices(const float* data, const std::int32_t* cols, const P* indptr, const std::int32_t* rows,
                     std::size_t out, std::size_t in, const std::int64_t* starts, float* values, std::uint8_t* index,
                     std::int32_t* base) {
  const std::size_t slices = (out + kSliceRows - 1) / kSliceRows;
  const auto total = static_cast<std::size_t>(starts[slices]);
  std::fill(values, values + kSliceRows * total, 0.0f);
  std::fill(index, index + kSliceRows * total, kSlicePad);
  std::fill(base, base + total, 0);
  std::vector<std::size_t> order;
  for (std::size_t s = 0; s < slices; ++s) {
    const auto t0 = static_cast<std::size_t>(starts[s]);
    plan_slice(
        cols, indptr, rows, out, in, s, order,
        [&](std::size_t step, std::size_t lane, std::size_t p) {
          const std::size_t u = t0 + step;
          values[kSliceRows * u + lane] = data[p];
          index[kSliceRows * (u & ~std::size_t{3}) + 4 * lane + (u & 3)] =
              static_cast<std::uint8_t>(static_cast<std::size_t>(cols[p]) - static_cast<std::size_t>(base[u]));
        },
        [&](std::size_t step, std::size_t b) { base[t0 + step] = static_cast<std::int32_t>(b); });
  }
}

void spmm_slices(const float* x, std::size_t batch, std::size_t in, const float* values, const std::uint8_t* index,
                 const std::int32_t* base, const std::int64_t* starts, const std::int32_t* rows, std::size_t out,
                 float* y) {
  if (batch == 0 || out == 0) return;
  // x on cache lines, each row padded with zeros to slice_x_row(in), past
  // its last window: the kernels load a window as two aligned vectors
  // (NumPy's 16-byte alignment split every load in two: 8.2 against 14 us at
  // 1536 x 384) and never read past a row. The copy also tells whether x is
  // all finite: padding lanes multiply 0 by some x of their window, which
  // adds nothing unless that x is inf or NaN, and only then do the kernels
  // mask them.
  //
  // The copy lives in a buffer kept per thread up to kKeptXBytes: at batch 1
  // on MiniLM's 384 x 384 an aligned_alloc and free per call cost more
  // than the copy (glibc consolidates its fast bins on every request of
  // 1 KiB or more).
  const std::size_t row = slice_x_row(in);
  const std::size_t bytes = batch * row * sizeof(float);
  constexpr std::size_t kKeptXBytes = std::size_t(1) << 18;
  std::unique_ptr<float[], void (*)(void*)> fresh(nullptr, std::free);
  thread_local std::unique_ptr<float[], void (*)(void*)> kept(nullptr, std::free);  // kKeptXBytes once made
  float* xp = nullptr;
  if (bytes <= kKeptXBytes) {
    if (!kept) {
      kept.reset(static_cast<float*>(std::aligned_alloc(64, kKeptXBytes)));
      if (!kept) throw std::bad_alloc();
    }
    xp = kept.get();
  } else {
    fresh.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!fresh) throw std::bad_alloc();
    xp = fresh.get();
  }
  std::uint32_t nonfinite = 0;  // integer ORs: a loop the compiler vectorizes
  for (std::size_t b = 0; b < batch; ++b) {
    const float* src = x + b * in;
    float* dst = xp + b * row;
    std::memcpy(dst, src, in * sizeof(float));
    std::fill(dst + in, dst + row, 0.0f);
    for (std::size_t c = 0; c < in; ++c) {
      std::uint32_t u;
      std::memcpy(&u, src + c, 4);
      nonfinite |= static_cast<std::uint32_t>((u & 0x7f800000u) == 0x7f800000u);  // all-ones exponent
    }
  }
  const bool finite = nonfinite == 0;
  const std::size_t slices = (out + kSliceRows - 1) / kSliceRows;
  const std::size_t work = batch * kSliceRows * static_cast<std::size_t>(starts[slices]);
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    // Chunks of kSparseRowGrain rows, as the CSR and 2:4 products.
    over_row_chunks(slices, work, [&](std::size_t s0, std::size_t s1) {
      kernels::spmm_slices_rows<I>(xp, batch, row, !finite, values, index, base, starts, rows, out, s0, s1, y);
    }, kSparseRowGrain / kSliceRows);
  });
}

template bool csr_slice_rows<std::int32_t>(const std::int32_t*, const std::int32_t*, std::size_t, std::size_t,
                                           std::int32_t*, std::int64_t*);
template bool csr_slice_rows<std::int64_t>(const std::int32_t*, const std::int64_t*, std::size_t, std::size_t,
                                           std::int32_t*, std::int64_t*);
template void csr_slice_starts<std::int32_t>(const std::int32_t*, const std::int32_t*, const std::int32_t*,
                                             std::size_t, std::size_t, std::int64_t*);
template void csr_slice_starts<std::int64_t>(const std::int32_t*, const std::int64_t*, const std::int32_t*,
                                             std::size_t, std::size_t, std::int64_t*);
template void pack_csr_slices<std::int32_t>(const float*, const std::int32_t*, const std::int32_t*, const std::int32_t*,
                                            std::size_t, std::size_t, const std::int64_t*, float*, std::uint8_t*,
                                            std::int32_t*);
template void pack_csr_slices<std::int64_t>(const float*, const std::int32_t*, const std::int64_t*, const std::int32_t*,
                                            std::size_t, std::size_t, const std::int64_t*, float*, std::uint8_t*,
                                            std::int32_t*);

template void spmm_csr<std::int32_t>(const float*, std::size_t, std::size_t, const float*, const std::int32_t*,
                                     const std::int32_t*, std::size_t, float*);
template void spmm_csr<std::int64_t>(const float*, std::size_t, std::size_t, const float*, const std::int32_t*,
                                     const std::int64_t*, std::size_t, float*);

}  // namespace slimgrad
