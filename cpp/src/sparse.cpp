// Threaded, dispatched entry points of the sparse products (see sparse.hpp).
// Rows of W go to threads in fixed chunks of kSparseRowGrain; every y entry
// is computed by one thread in a shape-determined order, so the thread count
// never changes a bit of the result.
#include "slimgrad/sparse.hpp"

#include "slimgrad/threading.hpp"

namespace slimgrad {

bool positions24_valid(const std::uint8_t* positions, std::size_t kept) {
  // Each byte holds two groups (values 2g, 2g + 1 of a group g share a
  // nibble): a nibble is valid when its low position is below its high one.
  // Byte arithmetic only, so the compiler vectorizes the loop.
  const std::size_t full = kept / 4;
  unsigned bad = 0;
  for (std::size_t i = 0; i < full; ++i) {
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
