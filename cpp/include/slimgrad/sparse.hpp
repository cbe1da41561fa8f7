// Sparse weight products y = x @ W^T with W stored compressed:
//  - 2:4 (slimgrad.prune.compress_24): per row of W (out, in), in / 2 kept
//    values, and each value's position in its group of 4 as 2 bits, four
//    per byte, the first in the low bits, over the flat value index
//    (v = row * in / 2 + k, byte v / 4, bits 2 * (v % 4)). Value k of a row
//    multiplies x column 4 * (k / 2) + position.
//  - CSR (slimgrad.prune.to_csr): data / int32 column indices / indptr.
//  - CSR slices (slimgrad.prune.pack_sparse of a CSR) and 2:4 slices (of a
//    2:4 weight): the same values regrouped so that 16 rows advance
//    together, one SIMD lane per row (below).
// x is float32 (batch, in), C order; y float32 (batch, out), C order, fully
// written. Rows of W are independent: the threaded entry points split them
// into fixed chunks, and each y entry is summed in an order that depends
// only on the shapes, so any thread count gives identical bits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

namespace kernels {
// Batch columns per packed x panel of the 2:4 kernels for batches above 8
// (0: this ISA has no panel path).
template <Isa I>
std::size_t gemm24_panel_width();
// Panel p of x (batch, in) transposed, starting at xt (= the panels' base +
// p * pw * in): xt[c * w + j] = x[p * pw + j, c] with w = panel_width(batch,
// pw, p), zero for batch rows past the end.
template <Isa I>
void pack_panel(const float* x, std::size_t batch, std::size_t in, std::size_t pw, std::size_t p, float* xt);
// y[b, r] for r in [r0, r1) (r1 - r0 <= kSparseRowGrain, kPanelRowGrain with xt) and every b: one
// thread's share. xt: x packed by pack_panels (batch > 8 and a panel width),
// else nullptr.
template <Isa I>
void gemm24_rows(const float* x, const float* xt, std::size_t batch, std::size_t in, const float* values,
                 const std::uint8_t* positions, std::size_t out, std::size_t r0, std::size_t r1, float* y);
// Slices [s0, s1) of spmm_slices: xp is x padded to rows of slice_x_row(in)
// floats (see spmm_slices), masked when x holds a non-finite value (padding
// lanes must then add nothing).
template <Isa I>
void spmm_slices_rows(const float* xp, std::size_t batch, std::size_t row, bool masked, const float* values,
                      const std::uint8_t* index, const std::int32_t* base, const std::int64_t* starts,
                      const std::int32_t* rows, std::size_t out, std::size_t s0, std::size_t s1, float* y);
// 2:4 slices (see gemm24_slices below): slices [s0, s1) for the batch rows
// given (all of x, or a batch group on the panel path). xt: x packed by
// pack_panel (batch > 8 and a panel width), else nullptr. k_order: the whole
// product's batch is above 8 (the order of the sums, below).
template <Isa I>
void gemm24_slices_rows(const float* x, const float* xt, bool k_order, std::size_t batch, std::size_t in,
                        const float* values, const std::uint32_t* ctrl, std::size_t out, std::size_t s0,
                        std::size_t s1, float* y);
template <Isa I, class P>
void spmm_csr_rows(const float* x, std::size_t batch, std::size_t in, const float* data,
                   const std::int32_t* cols, const P* indptr, std::size_t out, std::size_t r0, std::size_t r1,
                   float* y);
}  // namespace kernels

// Rows of W per parallel chunk (fixed: the split never depends on threads).
inline constexpr std::size_t kSparseRowGrain = 32;
// The largest chunk of the 2:4 panel path (W with >= 8 x 128 rows, or a
// quarter of W when x is small): each 32 KB block of x panel is read by more
// rows before it leaves L1. Its k-order sums never depend on the chunks.
inline constexpr std::size_t kPanelRowGrain = 128;

// Vectors per full x panel of the 2:4 panel path: per kept value one
// weight broadcast and position decode feed kPanelVectors FMAs.
inline constexpr std::size_t kPanelVectors = 4;

// Padded batch columns of panel p (pw per full panel): the last panel is the
// batch tail rounded up to a vector (pw / kPanelVectors), not to pw.
inline std::size_t panel_width(std::size_t batch, std::size_t pw, std::size_t p) {
  const std::size_t rest = batch - p * pw, lane = pw / kPanelVectors;
  return rest >= pw ? pw : (rest + lane - 1) / lane * lane;
}


// True when every group's two positions are distinct and increasing (the
// only packing compress_24 produces); `kept` values, (kept + 3) / 4 bytes.
bool positions24_valid(const std::uint8_t* positions, std::size_t kept);

void gemm24(const float* x, std::size_t batch, std::size_t in, const float* values, const std::uint8_t* positions,
            std::size_t out, float* y);
// P = int32_t or int64_t. The caller has checked indptr (0, non-decreasing,
// last = nnz) and every column (0 <= c < in): the kernels trust them.
template <class P>
void spmm_csr(const float* x, std::size_t batch, std::size_t in, const float* data, const std::int32_t* cols,
              const P* indptr, std::size_t out, float* y);

// CSR slices: W's rows in slices of kSliceRows (one SIMD lane per row), in
// W's order or, when that saves a sixth of the steps or more, ordered by
// their count of stored values, most first (csr_slice_rows: lane l of slice
// s then holds row rows[kSliceRows s + l] and writes y there by a scatter),
// so that a slice's rows are about as long as each other. A slice's step
// count is set by its longest lane per window: in magnitude-pruned weights
// row lengths vary (MiniLM's 1536 x 384 FFN at 90 %: 0 to 186 values, mean
// 38), and in W's order its slices took 9536 steps, sorted 6140 (1.4x faster
// at batch 1). With random masks sorting saves 1-3 %, less than the
// scatters cost (docs/sparse.md). A slice is a run of steps, a multiple of 4; a step reads one window of
// kSliceCols columns of x, which starts at column base[t], a multiple of
// kSliceStride, and holds at most one stored value per lane:
// values[16 t + lane], its column within the window in the index byte,
// kSlicePad where that lane has nothing (value 0). The index bytes of steps
// 4q..4q+3 interleave per lane, index[64 q + 4 lane + t % 4]: one 64-byte
// load gives every lane a 32-bit word whose low 5 bits are step 4q's column,
// and shifting it by 8 the next step's. The packing: each lane takes its
// row's values in column order; the windows start at 0, kSliceStride,
// 2 kSliceStride ... below in, and the window at b has as many steps as the
// most values a lane has left in columns below b + kSliceStride, rounded up
// to a multiple of kSliceWindowSteps, at each of which every lane takes its
// next value if it lies in the window (so values in the window's second half
// can ride along on a lane that is idle there). So steps 2p and 2p + 1 share
// their window (base[2p] == base[2p + 1]) and the AVX-512 kernel loads x once
// per pair: its three 64-byte loads a step bound it (values, two of x), and
// the rounding adds 5-7 % steps at 90 % sparsity (docs/sparse.md).
// Each y entry is summed as acc[t % 4] = fma(value, x, acc[t % 4]) over the
// slice's steps t, then (acc0 + acc1) + (acc2 + acc3): every ISA and thread
// count gives the same bits. Why: at batch 1 a CSR row of ~40 values paid
// its own gathers, tail mask and horizontal sum; here a 32-column window of
// x sits in two registers and one vpermt2ps feeds 16 rows, and batch rows
// share each step's loads (docs/sparse.md). Overlapping windows made 18-25 %
// fewer steps than disjoint 32-column blocks at 90 % sparsity: a step is
// padded wherever a lane has nothing in its window. AVX-512 only: AVX2 runs
// the plain reference loop.
inline constexpr std::size_t kSliceRows = 16, kSliceCols = 32, kSliceStride = 16, kSliceWindowSteps = 2;
inline constexpr std::uint8_t kSlicePad = 0x80;
// The padded length of each x row the kernels read: every window lies inside.
inline std::size_t slice_x_row(std::size_t in) {
  return (in + kSliceStride - 1) / kSliceStride * kSliceStride + kSliceCols - kSliceStride;
}

// rows (out entries): W's rows in slice order: by stored values descending
// (ties in row order) if that makes at most 5/6 of the steps of W's own
// order, else W's order; starts as csr_slice_starts gives for that order;
// returns whether they were reordered. The caller has checked the CSR (as
// for spmm_csr).
template <class P>
bool csr_slice_rows(const std::int32_t* cols, const P* indptr, std::size_t out, std::size_t in, std::int32_t* rows,
                    std::int64_t* starts);
// starts (out / kSliceRows rounded up, + 1 entries): the first step of each
// slice (its lanes holding W's rows `rows`, in order), then the total.
template <class P>
void csr_slice_starts(const std::int32_t* cols, const P* indptr, const std::int32_t* rows, std::size_t out,
                      std::size_t in, std::int64_t* starts);
// Fills values (16 per step), index (16 bytes per step) and base (1 per step)
// for the steps csr_slice_starts counted.
template <class P>
void pack_csr_slices(const float* data, const std::int32_t* cols, const P* indptr, const std::int32_t* rows,
                     std::size_t out, std::size_t in, const std::int64_t* starts, float* values, std::uint8_t* index,
                     std::int32_t* base);
// 2:4 slices: the 2:4 values regrouped like the CSR slices, kSliceRows rows
// advancing together (one SIMD lane per row; rows past out hold zeros).
// values[(s * in / 2 + k) * 16 + lane] is kept value k of row 16 s + lane
// (k = 2 g + j: the j-th kept value of group g, columns 4 g .. 4 g + 3);
// ctrl[(s * chunks + g / 8) * 16 + lane] (chunks = groups rounded up to 8,
// / 8) holds group g's two positions in bits 4 (g % 8) + 0..3: the first in
// the low 2 bits, as compress_24's positions byte does for a group. Why: at
// batch 1 the row-major kernel decoded each chunk's bits (srlv, vpternlogd)
// and summed every 4 rows horizontally; here every lane of a step shares
// one group of x (a 128-bit broadcast), and vpermilps picks each value's
// column by the low 2 bits of the lane's word (shifted by 2 for the second
// value, by 4 for the next group). Sums: batch <= 8,
// acc[2 (g % 2) + j] = fma(value, x, acc[...]) over the groups, then
// (acc0 + acc1) + (acc2 + acc3); batch > 8 (the panel path), one fma per
// value in k order. Every ISA and thread count gives the same bits: AVX-512
// and AVX2 (half a slice per ymm) by hand, the scalar ISA by the reference
// loop (std::fma).
inline constexpr std::size_t kSlice24Groups = 8;  // groups per ctrl word
inline std::size_t slice24_chunks(std::size_t in) { return (in / 4 + kSlice24Groups - 1) / kSlice24Groups; }
// values / positions as compress_24 writes them (checked by the caller).
void pack_24_slices(const float* values, const std::uint8_t* positions, std::size_t out, std::size_t in,
                    float* svalues, std::uint32_t* ctrl);
void gemm24_slices(const float* x, std::size_t batch, std::size_t in, const float* values, const std::uint32_t* ctrl,
                   std::size_t out, float* y);

// y (batch, out) = x (batch, in) @ W^T from W's slices, which the kernels
// trust (made by csr_slice_rows and pack_csr_slices, kept unwritable by the
// caller: rows must be a permutation of [0, out), or nullptr for W's order).
void spmm_slices(const float* x, std::size_t batch, std::size_t in, const float* values, const std::uint8_t* index,
                 const std::int32_t* base, const std::int64_t* starts, const std::int32_t* rows, std::size_t out,
                 float* y);

}  // namespace slimgrad
