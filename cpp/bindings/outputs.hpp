// Fresh output arrays from a small cache of recently freed blocks.
//
// Why: a new NumPy array of many megabytes is new memory to the OS once
// glibc has returned the previous one (other libraries' temporaries in
// between make it trim), and every 4 KiB page then faults on first write.
// On the KVM machines here a fault costs ~5-7 us: a 16 MiB mask written by
// magnitude_mask took 13.1 ms with 597 faults and 8.7 ms with none (Intel
// Xeon, 2 threads), a BatchNorm1d forward + backward on 4096 x 1024 paid
// ~377 faults per call. A block kept mapped after its array dies is reused,
// already faulted in, by the next output of the same byte size: the pattern
// of a training or compression loop.
//
// Only outputs of at least kMinCachedBytes go through it (glibc serves small
// ones well); blocks are matched by exact (page-rounded) size; at most
// cache_limit() bytes of freed blocks are kept, the oldest dropped first.
// SLIMGRAD_OUTPUT_CACHE_MB sets the limit (default 256, 0 = off);
// release_cached_outputs() frees every kept block.
#pragma once

#include <cstddef>
#include <vector>

#include "buffers.hpp"

namespace slimgrad::bind {

inline constexpr std::size_t kMinCachedBytes = std::size_t(1) << 20;

// An uninitialized C-contiguous array (as numpy.empty), from the cache when
// it is large enough.
py::array new_output(const py::dtype& dtype, const std::vector<py::ssize_t>& shape);

std::size_t cached_output_bytes();
void release_cached_outputs();

}  // namespace slimgrad::bind
