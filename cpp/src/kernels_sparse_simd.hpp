// Sparse weight product kernels (see sparse.hpp), written once and compiled
// per ISA by kernels_sparse_{scalar,avx2,avx512}.cpp.
//  - Portable path (the scalar oracle): one float accumulator per y entry,
//    summed in k order. The 2:4 columns of a
//    row are decoded once into a small buffer and reused for every batch row.
//  - AVX2 and AVX-512: hand-written kernels in kernels_sparse_x86.hpp (small
//    batches: permute/gather tiles; larger 2:4 batches: packed x panels).
//  - CSR slices (sparse.hpp): AVX-512 only (kernels_sparse_x86.hpp); the
//    portable loop, with std::fma in the slices' order, is their reference.
//    2:4 slices likewise, with AVX2 kernels too.
//  - Rounding: the portable path sums each y entry in k order (no FMA in
//    the scalar unit); see kernels_sparse_x86.hpp for the SIMD orders.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "slimgrad/sparse.hpp"

#include "kernels_sparse_x86.hpp"

namespace slimgrad::kernels {
namespace {

inline unsigned position_at(const std::uint8_t* positions, std::size_t v) {
  return (positions[v >> 2] >> (2 * (v & 3))) & 3u;
}

void gemm24_portable(const float* x, std::size_t batch, std::size_t in, const float* values,
                     const std::uint8_t* positions, std::size_t out, std::size_t r0, std::size_t r1, float* y) {
  const std::size_t half = in / 2;
  std::vector<std::uint32_t> cols(half);
  for (std::size_t r = r0; r < r1; ++r) {
    const float* w = values + r * half;
    for (std::size_t k = 0; k < half; ++k)
      cols[k] = static_cast<std::uint32_t>(4 * (k >> 1) + position_at(positions, r * half + k));
    for (std::size_t b = 0; b < batch; ++b) {
      const float* xb = x + b * in;
      float acc = 0.0f;
      for (std::size_t k = 0; k < half; ++k) acc += w[k] * xb[cols[k]];
      y[b * out + r] = acc;
    }
  }
}

template <class P>
void spmm_csr_portable(const float* x, std::size_t batch, std::size_t in, const float* data,
                       const std::int32_t* cols, const P* indptr, std::size_t out, std::size_t r0, std::size_t r1,
                       float* y) {
  for (std::size_t r = r0; r < r1; ++r) {
    const auto p0 = static_cast<std::size_t>(indptr[r]), p1 = static_cast<std::size_t>(indptr[r + 1]);
    for (std::size_t b = 0; b < batch; ++b) {
      const float* xb = x + b * in;
      float acc = 0.0f;
      for (std::size_t p = p0; p < p1; ++p) acc += data[p] * xb[cols[p]];
      y[b * out + r] = acc;
    }
  }
}

// The CSR slices' reference (see sparse.hpp for the layout and the order):
// lane by lane, std::fma so that it has the SIMD kernels' bits.
void spmm_slices_portable(const float* xp, std::size_t batch, std::size_t row, const float* values,
                          const std::uint8_t* index, const std::int32_t* base, const std::int64_t* starts,
                          const std::int32_t* slice_rows, std::size_t out, std::size_t s0, std::size_t s1, float* y) {
  for (std::size_t s = s0; s < s1; ++s) {
    const auto t0 = static_cast<std::size_t>(starts[s]), t1 = static_cast<std::size_t>(starts[s + 1]);
    const std::size_t r0 = s * kSliceRows, rows = std::min(kSliceRows, out - r0);
    for (std::size_t lane = 0; lane < rows; ++lane)
      for (std::size_t b = 0; b < batch; ++b) {
        const float* xb = xp + b * row;
        float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (std::size_t t = t0; t < t1; ++t) {
          const std::uint8_t c = index[kSliceRows * (t & ~std::size_t{3}) + 4 * lane + (t & 3)];
          if (c & kSlicePad) continue;
          acc[(t - t0) & 3] = std::fma(values[kSliceRows * t + lane], xb[base[t] + c], acc[(t - t0) & 3]);
        }
        const std::size_t r = slice_rows ? static_cast<std::size_t>(slice_rows[r0 + lane]) : r0 + lane;
        y[b * out + r] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
      }
  }
}

// The 2:4 slices' reference (sparse.hpp: layout and order), lane by lane
// with std::fma: batch <= 8 in 4 accumulators, else one in k order.
void gemm24_slices_portable(const float* x, bool k_order, std::size_t batch, std::size_t in, const float* values,
                            const std::uint32_t* ctrl, std::size_t out, std::size_t s0, std::size_t s1, float* y) {
  const Sliced24 w24{values, ctrl, in / 2, slice24_chunks(in)};
  for (std::size_t r = s0 * kSliceRows; r < std::min(out, s1 * kSliceRows); ++r) {
    const float* w = w24.row(r);
    const std::uint32_t* words = w24.at(r);
    for (std::size_t b = 0; b < batch; ++b) {
      const float* xb = x + b * in;
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (std::size_t g = 0; g < in / 4; ++g) {
        const unsigned nib = w24.nibble(words, 2 * g);
        const float* xg = xb + 4 * g;
        float& a0 = k_order ? acc[0] : acc[2 * (g % 2)];
        a0 = std::fma(w[2 * g * kSliceRows], xg[nib & 3u], a0);
        float& a1 = k_order ? acc[0] : acc[2 * (g % 2) + 1];
        a1 = std::fma(w[(2 * g + 1) * kSliceRows], xg[nib >> 2], a1);
      }
      y[b * out + r] = k_order ? acc[0] : (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
  }
}

}  // namespace

template <Isa I>
void pack_panel(const float* x, std::size_t batch, std::size_t in, std::size_t pw, std::size_t p, float* xt) {
  const std::size_t b0 = p * pw, nb = std::min(pw, batch - b0), w = panel_width(batch, pw, p);
  // 8 columns at a time: 8 x 8 blocks transposed in registers (the scalar
  // loop's strided stores took 11 % of a 384x384 batch-512 product), the
  // batch tail and the padding past it by the loop; each x row is read in
  // 32-byte pieces while the 8 destination rows (w floats each) stay in L1.
  auto rest = [&](std::size_t c0, std::size_t c1, std::size_t j0) {
    for (std::size_t j = j0; j < nb; ++j)
      for (std::size_t c = c0; c < c1; ++c) xt[c * w + j] = x[(b0 + j) * in + c];
    for (std::size_t c = c0; c < c1; ++c) std::fill(xt + c * w + nb, xt + (c + 1) * w, 0.0f);
  };
  std::size_t c0 = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; c0 + 8 <= in; c0 += 8) {
    std::size_t j = 0;
    for (; j + 8 <= nb; j += 8) simd::transpose8x8(x + (b0 + j) * in + c0, in, xt + c0 * w + j, w);
    rest(c0, c0 + 8, j);
  }
#endif
  for (; c0 < in; c0 += 8) rest(c0, std::min(in, c0 + 8), 0);
}

template <Isa I>
std::size_t gemm24_panel_width() {
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) return kPanelVectors * Zmm::L;
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (I == Isa::avx2) return kPanelVectors * Ymm::L;
#endif
  return 0;
}

template <Isa I>
void gemm24_rows(const float* x, const float* xt, std::size_t batch, std::size_t in, const float* values,
                 const std::uint8_t* positions, std::size_t out, std::size_t r0, std::size_t r1, float* y) {
  const std::size_t half = in / 2, nbytes = (out * half + 3) / 4;
  if (half == 0) {
    for (std::size_t b = 0; b < batch; ++b) std::fill(y + b * out + r0, y + b * out + r1, 0.0f);
    return;
  }
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (I == Isa::avx2 || I == Isa::avx512) {
    if (xt != nullptr) {  // packed panels (gemm24_panel_width<I>() wide)
#if defined(__AVX512F__)
      if constexpr (I == Isa::avx512)
        return gemm24_panels<Zmm>(xt, batch, in, RowMajor24{values, positions, half}, out, r0, r1, y);
#endif
      if constexpr (I == Isa::avx2)
        return gemm24_panels<Ymm>(xt, batch, in, RowMajor24{values, positions, half}, out, r0, r1, y);
    }
    for (std::size_t b0 = 0; b0 < batch; b0 += kTileBatch)
      over_rows(std::min(kTileBatch, batch - b0), r0, r1, [&](auto rr, auto nb, std::size_t r) {
        constexpr std::size_t R = decltype(rr)::value, NB = decltype(nb)::value;
#if defined(__AVX512F__)
        if constexpr (I == Isa::avx512)
          return tile24_avx512<R, NB>(x + b0 * in, in, values, positions, nbytes, r, y + b0 * out, out);
#endif
        if constexpr (I == Isa::avx2)
          return tile24_avx2<R, NB>(x + b0 * in, in, values, positions, nbytes, r, y + b0 * out, out);
      });
    return;
  }
#endif
  (void)xt;
  (void)nbytes;
  gemm24_portable(x, batch, in, values, positions, out, r0, r1, y);
}

template <Isa I>
void gemm24_slices_rows(const float* x, const float* xt, bool k_order, std::size_t batch, std::size_t in,
                        const float* values, const std::uint32_t* ctrl, std::size_t out, std::size_t s0,
                        std::size_t s1, float* y) {
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) {
    if (xt != nullptr)
      return gemm24_panels<Zmm>(xt, batch, in, Sliced24{values, ctrl, in / 2, slice24_chunks(in)}, out,
                                s0 * kSliceRows, std::min(out, s1 * kSliceRows), y);
    if (batch == 1) {  // two slices share each x load
      std::size_t s = s0;
      for (; s + 2 <= s1; s += 2) slice24_avx512<2, 1>(x, in, values, ctrl, s, y, out);
      if (s < s1) slice24_avx512<1, 1>(x, in, values, ctrl, s, y, out);
      return;
    }
    for (std::size_t s = s0; s < s1; ++s)
      for (std::size_t b0 = 0; b0 < batch; b0 += kSliceBatch)
        with_count(std::min(kSliceBatch, batch - b0), [&](auto nb) {
          constexpr std::size_t NB = decltype(nb)::value;
          if constexpr (NB <= kSliceBatch)
            slice24_avx512<1, NB>(x + b0 * in, in, values, ctrl, s, y + b0 * out, out);
        });
    return;
  }
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (I == Isa::avx2) {
    if (xt != nullptr)
      return gemm24_panels<Ymm>(xt, batch, in, Sliced24{values, ctrl, in / 2, slice24_chunks(in)}, out,
                                s0 * kSliceRows, std::min(out, s1 * kSliceRows), y);
    constexpr std::size_t kRows = 2;  // batch rows per pass: 4 accumulators each, 16 ymm registers
    for (std::size_t s = s0; s < s1; ++s)
      for (std::size_t h = 0; h < 2; ++h)
        for (std::size_t b0 = 0; b0 < batch; b0 += kRows) {
          if (batch - b0 >= kRows)
            slice24_avx2<kRows>(x + b0 * in, in, values, ctrl, s, h, y + b0 * out, out);
          else
            slice24_avx2<1>(x + b0 * in, in, values, ctrl, s, h, y + b0 * out, out);
        }
    return;
  }
#endif
  (void)xt;
  gemm24_slices_portable(x, k_order, batch, in, values, ctrl, out, s0, s1, y);
}

template <Isa I>
void spmm_slices_rows(const float* xp, std::size_t batch, std::size_t row, bool masked, const float* values,
                      const std::uint8_t* index, const std::int32_t* base, const std::int64_t* starts,
                      const std::int32_t* rows, std::size_t out, std::size_t s0, std::size_t s1, float* y) {
#if defined(__AVX512F__)
  if constexpr (I == Isa::avx512) {
    auto run = [&](auto mask) {
      constexpr bool Masked = decltype(mask)::value;
      for (std::size_t s = s0; s < s1; ++s)
        for (std::size_t b0 = 0; b0 < batch; b0 += kSliceBatch)
          with_count(std::min(kSliceBatch, batch - b0), [&](auto nb) {
            constexpr std::size_t NB = decltype(nb)::value;
            if constexpr (NB <= kSliceBatch)
              slice_avx512<Masked, NB>(xp + b0 * row, row, values, index, base, starts, rows, s, y + b0 * out,
                                       out);
          });
    };
    return masked ? run(std::true_type{}) : run(std::false_type{});
  }
#endif
  // AVX2 has no 32-entry permute: picking from 4 registers (4 vpermps, 3
  // blends) or gathering from the block ran 1.4-2x slower than the CSR
  // kernel, so pack_sparse keeps CSR below AVX-512 and this plain loop
  // (hardware FMA in the AVX2 unit) only serves ISA switches and tests.
  (void)masked;
  spmm_slices_portable(xp, batch, row, values, index, base, starts, rows, out, s0, s1, y);
}

template <Isa I, class P>
void spmm_csr_rows(const float* x, std::size_t batch, std::size_t in, const float* data, const std::int32_t* cols,
                   const P* indptr, std::size_t out, std::size_t r0, std::size_t r1, float* y) {
#if defined(__AVX2__) && defined(__FMA__)
  if constexpr (I == Isa::avx2 || I == Isa::avx512) {
    for (std::size_t b0 = 0; b0 < batch; b0 += kTileBatch)
      over_rows(std::min(kTileBatch, batch - b0), r0, r1, [&](auto rr, auto nb, std::size_t r) {
        constexpr std::size_t R = decltype(rr)::value, NB = decltype(nb)::value;
#if defined(__AVX512F__)
        if constexpr (I == Isa::avx512)
          return tile_csr<Zmm, P, R, NB>(x + b0 * in, in, data, cols, indptr, r, y + b0 * out, out);
#endif
        if constexpr (I == Isa::avx2)
          return tile_csr<Ymm, P, R, NB>(x + b0 * in, in, data, cols, indptr, r, y + b0 * out, out);
      });
    return;
  }
#endif
  spmm_csr_portable(x, batch, in, data, cols, indptr, out, r0, r1, y);
}

}  // namespace slimgrad::kernels

// The generated per-ISA units (CMakeLists.txt, SLIMGRAD_KERNEL_AREAS) define
// SLIMGRAD_UNIT_ISA and instantiate here.
#ifdef SLIMGRAD_UNIT_ISA
namespace slimgrad::kernels {
template std::size_t gemm24_panel_width<SLIMGRAD_UNIT_ISA>();
template void pack_panel<SLIMGRAD_UNIT_ISA>(const float*, std::size_t, std::size_t, std::size_t, std::size_t, float*);
template void gemm24_rows<SLIMGRAD_UNIT_ISA>(const float*, const float*, std::size_t, std::size_t, const float*,
                                             const std::uint8_t*, std::size_t, std::size_t, std::size_t, float*);
template void gemm24_slices_rows<SLIMGRAD_UNIT_ISA>(const float*, const float*, bool, std::size_t,
                                                    std::size_t, const float*, const std::uint32_t*, std::size_t,
                                                    std::size_t, std::size_t, float*);
template void spmm_slices_rows<SLIMGRAD_UNIT_ISA>(const float*, std::size_t, std::size_t, bool, const float*,
                                                  const std::uint8_t*, const std::int32_t*, const std::int64_t*,
                                                  const std::int32_t*, std::size_t, std::size_t, std::size_t, float*);
template void spmm_csr_rows<SLIMGRAD_UNIT_ISA, std::int32_t>(const float*, std::size_t, std::size_t, const float*,
                                                             const std::int32_t*, const std::int32_t*, std::size_t,
                                                             std::size_t, std::size_t, float*);
template void spmm_csr_rows<SLIMGRAD_UNIT_ISA, std::int64_t>(const float*, std::size_t, std::size_t, const float*,
                                                             const std::int32_t*, const std::int64_t*, std::size_t,
                                                             std::size_t, std::size_t, float*);
}  // namespace slimgrad::kernels
#endif  // SLIMGRAD_UNIT_ISA
