// Threaded, dispatched entry points of the K-quants (see kquant.hpp).
// Work items are fixed runs of super-blocks, cut at row ends (the importance
// weights restart with each row); every block depends only on its own 256
// values (and weights), so the bytes never depend on the thread count or on
// which thread ran which item.
#include <algorithm>
#include <limits>
#include <vector>

#include "slimgrad/core.hpp"
#include "slimgrad/kquant.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad::kquant {
namespace {

// 16 super-blocks = 4096 values: a row of a 4096-wide matrix per item, a
// few tens of microseconds of work, enough to amortize the task hand-out.
constexpr std::size_t kBlocksPerItem = 16;
constexpr std::size_t kNone = std::numeric_limits<std::size_t>::max();

}  // namespace

std::ptrdiff_t quantize(KType type, const float* x, std::size_t nrows, std::size_t n_per_row,
                        const float* imatrix, void* out) {
  const std::size_t bpr = n_per_row / kQK, ts = type_size(type);
  const std::size_t items_per_row = (bpr + kBlocksPerItem - 1) / kBlocksPerItem;
  const std::size_t n_items = nrows * items_per_row;
  std::vector<std::size_t> first(n_items, kNone);
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_tasks(n_items, [&](std::size_t item) {
      const std::size_t r = item / items_per_row, b0 = (item % items_per_row) * kBlocksPerItem;
      const std::size_t b1 = std::min(bpr, b0 + kBlocksPerItem);
      const float* xb = x + r * n_per_row + kQK * b0;
      const std::size_t n = kQK * (b1 - b0);
      const std::size_t k = kernels::find_nonfinite<I, float>(xb, n);
      if (k < n) {
        first[item] = r * n_per_row + kQK * b0 + k;
        return;  // never quantize NaN/inf: the caller raises
      }
      kernels::kquant_quantize<I>(static_cast<int>(type), xb, b1 - b0, imatrix ? imatrix + kQK * b0 : nullptr,
                                  static_cast<std::uint8_t*>(out) + ts * (r * bpr + b0));
    });
  });
  const std::size_t bad = first.empty() ? kNone : *std::min_element(first.begin(), first.end());
  return bad == kNone ? -1 : static_cast<std::ptrdiff_t>(bad);
}

void dequantize(KType type, const void* in, std::size_t n_blocks, float* out) {
  const std::size_t ts = type_size(type);
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_for(n_blocks, 64, [&](std::size_t b, std::size_t e) {
      kernels::kquant_dequantize<I>(static_cast<int>(type), static_cast<const std::uint8_t*>(in) + ts * b, e - b,
                                    out + kQK * b);
    });
  });
}

}  // namespace slimgrad::kquant
