// Scalar reference (the oracle) of the prune kernels: plain loops over the
// integer keys (|x| bits), no arithmetic on floats, so every ISA must match
// them bit for bit.
#include <cmath>
#include <cstring>

#include "slimgrad/prune.hpp"

namespace slimgrad::kernels {
namespace {

template <class T>
KeyOf<T> histogram_ref(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> base, KeyOf<T> prefix,
                       int hi, int lo, std::uint32_t* hist, std::size_t* below, std::uint8_t* codes) {
  const std::size_t bins = std::size_t(1) << (hi - lo);
  const KeyOf<T> digit_mask = static_cast<KeyOf<T>>(bins - 1);
  KeyOf<T> max_raw = 0;
  std::size_t under = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const KeyOf<T> raw = raw_key(x[i]);
    if (raw > max_raw) max_raw = raw;
    const KeyOf<T> key = key_at(x, prior, i);
    under += key < base;
    const KeyOf<T> k = key - base;
    const bool candidate = (k >> hi) == prefix;
    if (candidate) ++hist[(i % kHistCopies) * bins + ((k >> lo) & digit_mask)];
    if (codes)
      codes[i] = candidate    ? static_cast<std::uint8_t>(1 + ((k >> lo) & digit_mask))
                 : key < base ? kCodeBelow
                              : kCodeAbove;
  }
  *below += under;
  return max_raw;
}

std::size_t codes_keep_ref(std::uint8_t* codes, std::size_t n, std::uint8_t code, std::uint32_t* pos) {
  std::size_t found = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (codes[i] == code) pos[found++] = static_cast<std::uint32_t>(i);
    codes[i] = codes[i] > code;
  }
  return found;
}

template <class T>
std::size_t count_equal_ref(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> key) {
  std::size_t c = 0;
  for (std::size_t i = 0; i < n; ++i) c += key_at(x, prior, i) == key;
  return c;
}

template <class T>
std::size_t threshold_keep_ref(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> bound,
                               KeyOf<T> amb_lo, std::uint8_t* keep, KeyOf<T>* amb_keys,
                               std::uint32_t* amb_pos) {
  return threshold_keep_from(x, prior, 0, n, bound, amb_lo, keep, amb_keys, amb_pos, 0);
}

// Element s of a group is pruned before t when its key is smaller, or equal
// with s < t; t's rank is the number pruned before it, and t is kept when at
// least m - n are pruned before it.
template <class T>
void nm_keep_ref(const T* x, std::size_t rows, std::size_t inner, int n, int m, std::uint8_t* keep) {
  const std::size_t row = static_cast<std::size_t>(m) * inner;
  for (std::size_t r = 0; r < rows; ++r) {
    const T* xr = x + r * row;
    std::uint8_t* kr = keep + r * row;
    for (std::size_t j = 0; j < inner; ++j) {
      for (int t = 0; t < m; ++t) {
        const KeyOf<T> kt = raw_key(xr[t * inner + j]);
        int rank = 0;
        for (int s = 0; s < m; ++s) {
          const KeyOf<T> ks = raw_key(xr[s * inner + j]);
          rank += ks < kt || (ks == kt && s < t);
        }
        kr[t * inner + j] = rank >= m - n;
      }
    }
  }
}

template <class T>
std::size_t find_nan_ref(const T* x, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (raw_key(x[i]) > KeyTraits<T>::inf) return i;  // NaN's keys are above inf's
  return n;
}

template <class U>
void apply_keep_ref(U* a, const std::uint8_t* keep, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (!keep[i]) a[i] = 0;
}

}  // namespace

#define SLIMGRAD_PRUNE_SCALAR(T)                                                                  \
  template <>                                                                                     \
  KeyOf<T> histogram<Isa::scalar, T>(const T* x, const std::uint8_t* prior, std::size_t n,        \
                                     KeyOf<T> base, KeyOf<T> prefix, int hi, int lo,              \
                                     std::uint32_t* hist, std::size_t* below,                     \
                                     std::uint8_t* codes) {                                       \
    return histogram_ref(x, prior, n, base, prefix, hi, lo, hist, below, codes);                  \
  }                                                                                               \
  template <>                                                                                     \
  std::size_t count_equal<Isa::scalar, T>(const T* x, const std::uint8_t* prior, std::size_t n,   \
                                          KeyOf<T> key) {                                         \
    return count_equal_ref(x, prior, n, key);                                                     \
  }                                                                                               \
  template <>                                                                                     \
  std::size_t threshold_keep<Isa::scalar, T>(const T* x, const std::uint8_t* prior, std::size_t n, \
                                             KeyOf<T> bound, KeyOf<T> amb_lo, std::uint8_t* keep,  \
                                             KeyOf<T>* amb_keys, std::uint32_t* amb_pos) {          \
    return threshold_keep_ref(x, prior, n, bound, amb_lo, keep, amb_keys, amb_pos);                 \
  }                                                                                               \
  template <>                                                                                     \
  void nm_keep<Isa::scalar, T>(const T* x, std::size_t rows, std::size_t inner, int n, int m,     \
                               std::uint8_t* keep) {                                              \
    nm_keep_ref(x, rows, inner, n, m, keep);                                                      \
  }                                                                                               \
  template <>                                                                                     \
  std::size_t find_nan<Isa::scalar, T>(const T* x, std::size_t n) {                               \
    return find_nan_ref(x, n);                                                                    \
  }

SLIMGRAD_PRUNE_SCALAR(float)
SLIMGRAD_PRUNE_SCALAR(double)
SLIMGRAD_PRUNE_SCALAR(Float16)
SLIMGRAD_PRUNE_SCALAR(BFloat16)
#undef SLIMGRAD_PRUNE_SCALAR

template <>
std::size_t codes_keep<Isa::scalar>(std::uint8_t* codes, std::size_t n, std::uint8_t code, std::uint32_t* pos) {
  return codes_keep_ref(codes, n, code, pos);
}

#define SLIMGRAD_APPLY_KEEP_SCALAR(U)                                                          \
  template <>                                                                                \
  void apply_keep<Isa::scalar, U>(U * a, const std::uint8_t* keep, std::size_t n) {          \
    apply_keep_ref(a, keep, n);                                                              \
  }
SLIMGRAD_APPLY_KEEP_SCALAR(std::uint8_t)
SLIMGRAD_APPLY_KEEP_SCALAR(std::uint16_t)
SLIMGRAD_APPLY_KEEP_SCALAR(std::uint32_t)
SLIMGRAD_APPLY_KEEP_SCALAR(std::uint64_t)
#undef SLIMGRAD_APPLY_KEEP_SCALAR

}  // namespace slimgrad::kernels
