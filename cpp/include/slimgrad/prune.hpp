// Pruning kernels: exact magnitude selection (radix select on the float
// bits), N:M masks and the fused mask application of the Pruner.
//
// The selection key of a float x is the IEEE bit pattern of |x| read as an
// unsigned integer (sign bit cleared): for non-NaN values it orders exactly
// like |x| (+0.0 and -0.0 share key 0, denormals sit above 0, +-inf on top),
// and NaN keys are larger than the key of inf, which is how NaN is detected.
// Element types: float, double, Float16 and BFloat16 (one per selection).
//
// With a `prior` keep mask (the Pruner's previous mask), positions it pruned
// get key 0 and every other key is shifted up by one: previously pruned
// weights are pruned again first, so a mask update never revives a weight.
//
// Two layers, as in core.hpp: single-threaded kernels<Isa, T> on one
// contiguous range, and threaded, dispatched entry points.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "slimgrad/isa.hpp"

namespace slimgrad {

template <class T>
struct KeyTraits;
template <>
struct KeyTraits<float> {
  using Key = std::uint32_t;
  static constexpr int bits = 31;  // the sign bit is cleared
  static constexpr Key inf = 0x7F800000u;
};
template <>
struct KeyTraits<double> {
  using Key = std::uint64_t;
  static constexpr int bits = 63;
  static constexpr Key inf = 0x7FF0000000000000ull;
};
// float16 and bfloat16 elements, read as their bits: the selection ranks
// them without widening them to float32 (half the bytes read, and no float32
// copy of a half-precision model). Their keys have 15 bits, held in 32-bit
// lanes so that the vector kernels are float's after the load.
struct Float16 {
  std::uint16_t bits;
};
struct BFloat16 {
  std::uint16_t bits;
};
template <std::uint32_t Inf>
struct HalfKeyTraits {
  using Key = std::uint32_t;
  static constexpr int bits = 15;
  static constexpr Key inf = Inf;
};
template <>
struct KeyTraits<Float16> : HalfKeyTraits<0x7C00u> {};
template <>
struct KeyTraits<BFloat16> : HalfKeyTraits<0x7F80u> {};
template <class T>
using KeyOf = typename KeyTraits<T>::Key;
template <class T>
inline constexpr bool is_half_v = sizeof(T) == 2;

namespace kernels {
// Internal linkage: each ISA file compiles its own copy (no ODR trap).
namespace {
// The selection key of x: its bits with the sign cleared (|x| orders as an integer).
template <class T>
KeyOf<T> raw_key(T x) {
  KeyOf<T> k = 0;  // a half fills the low 16 bits (x86 is little-endian)
  std::memcpy(&k, &x, sizeof(T));
  return k & ((KeyOf<T>(1) << KeyTraits<T>::bits) - 1);
}
// With a prior mask, previously pruned positions come first (key 0) and the
// others move up by one.
template <class T>
KeyOf<T> key_at(const T* x, const std::uint8_t* prior, std::size_t i) {
  const KeyOf<T> k = raw_key(x[i]);
  if (!prior) return k;
  return prior[i] ? k + 1 : 0;
}
// threshold_keep over [i0, n), `found` ambiguous entries listed so far: keep
// the keys >= bound, list those in [amb_lo, bound). Returns the new count.
template <class T>
std::size_t threshold_keep_from(const T* x, const std::uint8_t* prior, std::size_t i0, std::size_t n,
                                KeyOf<T> bound, KeyOf<T> amb_lo, std::uint8_t* keep, KeyOf<T>* amb_keys,
                                std::uint32_t* amb_pos, std::size_t found) {
  for (std::size_t i = i0; i < n; ++i) {
    const KeyOf<T> k = key_at(x, prior, i);
    keep[i] = k >= bound;
    if (k >= amb_lo && k < bound) {
      amb_keys[found] = k;
      amb_pos[found++] = static_cast<std::uint32_t>(i);
    }
  }
  return found;
}
}  // namespace
}  // namespace kernels

// Radix digits of at most this many bits: 2048 bins of uint32 (x4 copies)
// stay in L1.
inline constexpr int kDigitBits = 11;
// Copies of each histogram, indexed by position mod 4: consecutive equal
// digits (ties, zeros) then increment different counters, so the increments
// do not wait on each other through memory.
inline constexpr int kHistCopies = 4;
// When the bucket holding the k-th key (among `total` keys) has at most this
// many elements, the write pass lists them and ranks them in memory instead
// of another radix pass: 2^16, total / 256 for large selections, at most 2^24
// (~40 bytes each: the key and place, then the ranking; 670 MB at most).
// - A fixed 2^14 sent every selection of more than ~50M keys (whose bucket
//   holds ~total / 4000) to the radix select's extra reads: 10^8 float32
//   keys took 34 ms instead of 15 (Zen 5, docs/prune.md).
// - Weights widened from bfloat16 have few distinct magnitudes: the k-th
//   key's value alone has ~0.16 % of a normal matrix's elements (26K of 16M),
//   and 4096 x 4096 took 11.5 ms against 5.2-6.5 now.
inline std::size_t collect_max(std::size_t total) {
  return std::max<std::size_t>(std::size_t(1) << 16, std::min<std::size_t>(total >> 8, std::size_t(1) << 24));
}

// The one-pass selection's codes (magnitude_keep): the first pass writes,
// per element, kCodeBelow for a key below the guessed range, 1 + its digit
// (at most 2^kCodeBits) for a key in it, kCodeAbove for a key above it.
inline constexpr int kCodeBits = 7;
inline constexpr std::uint8_t kCodeBelow = 0, kCodeAbove = 255;

namespace kernels {
// Histogram of digit ((key - base) >> lo) & (2^(hi-lo) - 1) over the
// candidates, the elements with ((key - base) >> hi) == prefix (unsigned
// wrap-around: keys below base never match, since keys use at most
// KeyTraits<T>::bits bits). hist has kHistCopies * 2^(hi-lo) counters (each
// count goes to one of the copies) and is added to; so is *below, the
// number of keys < base. Returns the largest raw key (|x| bits, ignoring
// prior): a NaN is there if it is above KeyTraits<T>::inf. codes (or
// nullptr; then prefix == 0 and hi - lo <= kCodeBits): each element's code,
// 1 + digit for a candidate, else kCodeBelow or kCodeAbove.
template <Isa I, class T>
KeyOf<T> histogram(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> base, KeyOf<T> prefix,
                   int hi, int lo, std::uint32_t* hist, std::size_t* below, std::uint8_t* codes);
// In place over codes: codes[i] = codes[i] > code (1 = kept, 0 = pruned),
// and the i with codes[i] == code listed in order in pos; returns how many.
template <Isa I>
std::size_t codes_keep(std::uint8_t* codes, std::size_t n, std::uint8_t code, std::uint32_t* pos);
// Number of elements whose key equals `key`.
template <Isa I, class T>
std::size_t count_equal(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> key);
// keep[i] = key(x[i]) >= bound (1 = kept, 0 = pruned). The elements with
// amb_lo <= key < bound (none when amb_lo == bound) are also listed, in
// order, as (key, i) in amb_keys / amb_pos; returns how many.
template <Isa I, class T>
std::size_t threshold_keep(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> bound,
                           KeyOf<T> amb_lo, std::uint8_t* keep, KeyOf<T>* amb_keys,
                           std::uint32_t* amb_pos);
// N:M over `rows` group rows of m * inner elements, element t of group j at
// t * inner + j: keep the n largest keys of each group; the m - n pruned are
// the smallest, ties pruned lower index first (as magnitude selection).
template <Isa I, class T>
void nm_keep(const T* x, std::size_t rows, std::size_t inner, int n, int m, std::uint8_t* keep);
// Index of the first NaN in x[0, n), or n.
template <Isa I, class T>
std::size_t find_nan(const T* x, std::size_t n);
// a[i] = 0 where keep[i] == 0. U is the unsigned integer of the element's
// width: zeroing is a bit operation, so one kernel serves every dtype.
template <Isa I, class U>
void apply_keep(U* a, const std::uint8_t* keep, std::size_t n);
}  // namespace kernels

// One array of a magnitude selection.
struct PruneSegment {
  const void* x;               // n elements of the selection's type, C order
  const std::uint8_t* prior;   // nullptr or n bytes: 0 = pruned before
  std::size_t n;
  std::uint8_t* keep;          // out: n bytes, 1 = kept
};

// Where a NaN stopped a selection (found == false: none).
struct NanPosition {
  bool found = false;
  std::size_t segment = 0;
  std::size_t index = 0;
};

// Prunes exactly k of the elements of all segments together (k <= total):
// the k smallest keys, ties pruned in (segment, flat index) order. Returns
// the first NaN (in that order) without writing any mask if there is one.
// Memory: the masks plus O(bins x threads); no copy of the data.
template <class T>
NanPosition magnitude_keep(const std::vector<PruneSegment>& segments, std::size_t k);

// The selection of magnitude_keep as one count per segment, without masks:
// pruning the counts[s] smallest keys of segment s alone (ties lower index
// first) gives exactly its part of the global selection (the keys below the
// k-th key T, and its share of the T-valued keys, which go in (segment,
// index) order). Radix passes until T is one key, then a pass counting each
// segment's keys below and equal to T; memory O(bins x threads). Why: a
// caller that makes each array's mask as it writes it (the prune command)
// needs no mask of the whole model (one byte a weight: 70 GB for 70B).
// keep in the segments is not used. Returns the first NaN, if any, with no
// counts.
template <class T>
NanPosition magnitude_counts(const std::vector<PruneSegment>& segments, std::size_t k,
                             std::vector<std::size_t>& counts);

// Magnitude selections of kSampledFrom keys and more guess the k-th key's
// range from a sample of kSampleKeys keys, at sample_index(j, total) for j
// in [0, kSampleKeys) in the flat order of all arrays (exposed for the
// tests).
inline constexpr std::size_t kSampledFrom = std::size_t(1) << 18;
inline constexpr std::size_t kSampleKeys = 16384, kSampleRun = 4, kSampleGap = 4;
std::size_t sample_index(std::size_t j, std::size_t total);

// The keys of the given ranks (0-based, each below keys.size()) among keys,
// exactly: the order statistics magnitude selection takes of its sample.
// Exposed for the tests.
template <class Key>
std::vector<Key> keys_at_ranks(const std::vector<Key>& keys, const std::vector<std::size_t>& ranks);

// The selections' histogram pass (kernels::histogram over pieces and
// tasks, counts merged into hist: 2^(hi-lo) of them) over one array at the
// current level and thread count, codes written to `codes` when not null:
// for the tests.
template <class T>
KeyOf<T> histogram_at_level(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> base, KeyOf<T> prefix,
                            int hi, int lo, std::vector<std::size_t>& hist, std::size_t* below,
                            std::uint8_t* codes);

// N:M masks of a C-contiguous array viewed as (rows, m, inner); returns the
// first NaN's flat index (keep then holds no valid mask) or -1.
template <class T>
std::ptrdiff_t nm_keep(const T* x, std::size_t rows, std::size_t inner, int n, int m,
                       std::uint8_t* keep);

// One mask and the arrays it applies to (the weight and its optimizer
// moments, float or 8-bit codes), each `n` elements of `itemsize` 1, 2, 4
// or 8 bytes.
struct MaskGroup {
  const std::uint8_t* keep;
  std::size_t n;
  std::vector<std::pair<void*, int>> arrays;  // (data, itemsize)
};
// Zeroes every array of every group where its mask is 0: one pass over the
// data, chunk by chunk (the mask chunk is read once for all its arrays).
void apply_masks(const std::vector<MaskGroup>& groups);

}  // namespace slimgrad
