// Fresh output arrays from a small cache of recently freed blocks.
//
// Why: a new NumPy array of many megabytes is new memory to the OS once
// glibc has returned the previous one (it unmaps blocks of 32 MiB and more
// at free, and trims its heap when other libraries free in between), and
// every 4 KiB page then faults on first write. On the KVM machines here a
// fault costs ~5-7 us. Intel Xeon, 2 threads, 64 MiB outputs: a Q8_0
// dequantize took 6.5-7.5 ms with ~570 faults per call and 1.7-1.9 ms with
// none, a BatchNorm1d forward + backward on 8192 x 2048 29-33 ms and 18-19.
// A block kept mapped after its array dies is reused, already faulted in, by
// the next output of the same byte size: the pattern of a training or
// compression loop.
//
// Only outputs of at least kMinCachedBytes go through it (glibc serves small
// ones well); blocks are 64-byte aligned (from 4 MiB on Linux, 2 MiB aligned
// and advised to use transparent huge pages, as NumPy advises its own) and
// matched by exact (page-rounded) size; at most
// SLIMGRAD_OUTPUT_CACHE_MB (default 256, 0 = off) of freed blocks are kept,
// the oldest dropped first; release_cached_outputs() frees them all.
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
