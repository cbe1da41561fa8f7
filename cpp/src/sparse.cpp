// Threaded, dispatched entry points of the sparse products (see sparse.hpp).
// Rows of W go to threads in fixed chunks of kSparseRowGrain; every y entry
// is computed by one thread in a shape-determined order, so the thread count
// never changes a bit of the result.
#include "slimgrad/sparse.hpp"

#include <cstring>

#include "slimgrad/threading.hpp"

namespace slimgrad {

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

void gemm24(const float* x, std::size_t batch, std::size_t in, const float* values, const std::uint8_t* positions,
            std::size_t out, float* y) {
  if (batch == 0 || out == 0) return;
  dispatch([&](auto isa) {
    parallel_for(out, kSparseRowGrain, [&](std::size_t r0, std::size_t r1) {
      kernels::gemm24_rows<decltype(isa)::value>(x, batch, in, values, positions, out, r0, r1, y);
    });
  });
}

template <class P>
void spmm_csr(const float* x, std::size_t batch, std::size_t in, const float* data, const std::int32_t* cols,
              const P* indptr, std::size_t out, float* y) {
  if (batch == 0 || out == 0) return;
  dispatch([&](auto isa) {
    parallel_for(out, kSparseRowGrain, [&](std::size_t r0, std::size_t r1) {
      kernels::spmm_csr_rows<decltype(isa)::value, P>(x, batch, in, data, cols, indptr, out, r0, r1, y);
    });
  });
}

template void spmm_csr<std::int32_t>(const float*, std::size_t, std::size_t, const float*, const std::int32_t*,
                                     const std::int32_t*, std::size_t, float*);
template void spmm_csr<std::int64_t>(const float*, std::size_t, std::size_t, const float*, const std::int32_t*,
                                     const std::int64_t*, std::size_t, float*);

}  // namespace slimgrad
