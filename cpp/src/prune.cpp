// Threaded, dispatched entry points of the prune kernels (see prune.hpp).
//
// Magnitude selection is a radix select over the keys of all segments at
// once, most significant digit first (11-bit digits: 3 passes for float32,
// at most 6 for float64, fewer when a bucket is used up). Each pass reads
// the data and builds per-task histograms of the candidates' next digit;
// integer counts merge exactly, so the result does not depend on how the
// work was split. A final pass writes the masks from the threshold key; if
// the k-th key is tied, one counting pass per chunk plus a prefix sum finds
// the flat position where ties stop being pruned, which keeps the tie rule
// deterministic for any thread count.
#include "slimgrad/prune.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "slimgrad/threading.hpp"

namespace slimgrad {
namespace {

// A contiguous piece of one segment: the unit of parallel work. Pieces
// depend only on the segment sizes, never on the thread count.
struct Piece {
  std::size_t segment, begin, end;
};

std::vector<Piece> split(const std::vector<PruneSegment>& segments, std::size_t grain) {
  std::vector<Piece> pieces;
  for (std::size_t s = 0; s < segments.size(); ++s)
    for (std::size_t b = 0; b < segments[s].n; b += grain)
      pieces.push_back({s, b, std::min(segments[s].n, b + grain)});
  return pieces;
}

// Threads only pay off when each gets at least a chunk of elements: waking
// an OpenMP team costs microseconds (milliseconds on a busy machine), more
// than the whole pass over a small array. Depends on sizes only.
std::size_t worth_threads(std::size_t total_elements, std::size_t units) {
  const std::size_t by_size = std::max<std::size_t>(1, total_elements / kDefaultGrain);
  return std::min({units, by_size, static_cast<std::size_t>(get_num_threads())});
}

// body(i) for i in [0, units): in parallel when the work is large enough.
template <class Body>
void for_units(std::size_t units, std::size_t total_elements, Body&& body) {
  if (worth_threads(total_elements, units) > 1) {
    parallel_for(units, 1, [&](std::size_t b, std::size_t e) {
      for (std::size_t i = b; i < e; ++i) body(i);
    });
  } else {
    for (std::size_t i = 0; i < units; ++i) body(i);
  }
}

template <class T>
const T* data(const PruneSegment& s) {
  return static_cast<const T*>(s.x);
}
const std::uint8_t* prior_at(const PruneSegment& s, std::size_t b) { return s.prior ? s.prior + b : nullptr; }

template <class T>
NanPosition first_nan(const std::vector<PruneSegment>& segments) {
  NanPosition pos;
  dispatch([&](auto isa) {
    for (std::size_t s = 0; s < segments.size() && !pos.found; ++s) {
      const std::size_t i = kernels::find_nan<decltype(isa)::value, T>(data<T>(segments[s]), segments[s].n);
      if (i < segments[s].n) pos = {true, s, i};
    }
  });
  return pos;
}

}  // namespace

template <class T>
NanPosition magnitude_keep(const std::vector<PruneSegment>& segments, std::size_t k) {
  using Key = KeyOf<T>;
  const std::vector<Piece> pieces = split(segments, kDefaultGrain);
  if (pieces.empty()) return {};
  std::size_t total = 0;
  for (const PruneSegment& s : segments) total += s.n;
  const std::size_t tasks = worth_threads(total, pieces.size());

  Key prefix = 0;           // digits chosen so far: the candidates' key >> hi
  std::size_t rem = k;      // still to prune among the candidates
  Key bound = 0;            // keys below bound are pruned ...
  std::size_t ties = 0;     // ... and the first `ties` keys equal to bound too
  int hi = KeyTraits<T>::bits;
  bool first = true;
  while (true) {
    const int lo = std::max(hi - kDigitBits, 0);
    const std::size_t bins = std::size_t(1) << (hi - lo);
    std::vector<std::uint32_t> hists(tasks * kHistCopies * bins, 0);
    std::vector<Key> maxima(tasks, 0);
    dispatch([&](auto isa) {
      parallel_tasks(tasks, [&](std::size_t t) {
        std::uint32_t* h = hists.data() + t * kHistCopies * bins;
        Key mx = 0;
        for (std::size_t p = pieces.size() * t / tasks; p < pieces.size() * (t + 1) / tasks; ++p) {
          const PruneSegment& s = segments[pieces[p].segment];
          const Key m = kernels::histogram<decltype(isa)::value, T>(
              data<T>(s) + pieces[p].begin, prior_at(s, pieces[p].begin), pieces[p].end - pieces[p].begin,
              prefix, hi, lo, h);
          mx = std::max(mx, m);
        }
        maxima[t] = mx;
      });
    });
    if (first && *std::max_element(maxima.begin(), maxima.end()) > KeyTraits<T>::inf)
      return first_nan<T>(segments);
    first = false;
    if (rem == 0) break;  // k == 0: bound 0 keeps everything
    std::vector<std::size_t> hist(bins, 0);
    for (std::size_t c = 0; c < tasks * kHistCopies; ++c)
      for (std::size_t b = 0; b < bins; ++b) hist[b] += hists[c * bins + b];
    std::size_t b = 0, below = 0;
    while (below + hist[b] < rem) below += hist[b++];
    rem -= below;
    prefix = (prefix << (hi - lo)) | static_cast<Key>(b);
    if (rem == hist[b]) {  // the whole bucket is pruned: no ties to break
      bound = (prefix + 1) << lo;
      break;
    }
    if (lo == 0) {  // prefix is now a full key, held by hist[b] > rem elements
      bound = prefix;
      ties = rem;
      break;
    }
    hi = lo;
  }

  // Position of the last tie to prune: (piece, offset in piece); pieces
  // before it prune all ties, pieces after it none.
  std::size_t cut_piece = 0, cut_end = 0;
  if (ties > 0) {
    std::vector<std::size_t> counts(pieces.size());
    dispatch([&](auto isa) {
      for_units(pieces.size(), total, [&](std::size_t p) {
        const PruneSegment& s = segments[pieces[p].segment];
        counts[p] = kernels::count_equal<decltype(isa)::value, T>(
            data<T>(s) + pieces[p].begin, prior_at(s, pieces[p].begin), pieces[p].end - pieces[p].begin, bound);
      });
    });
    std::size_t left = ties;
    while (counts[cut_piece] < left) left -= counts[cut_piece++];
    // Scan the piece for its left-th tie (scalar oracle keys, via count).
    const Piece& pc = pieces[cut_piece];
    const PruneSegment& s = segments[pc.segment];
    std::size_t i = pc.begin;
    dispatch([&](auto isa) {
      for (; left > 0; ++i)
        left -= kernels::count_equal<decltype(isa)::value, T>(data<T>(s) + i, prior_at(s, i), 1, bound);
    });
    cut_end = i;  // ties at segment index < cut_end in this piece are pruned
  }

  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    for_units(pieces.size(), total, [&](std::size_t p) {
      const PruneSegment& s = segments[pieces[p].segment];
      const std::size_t b = pieces[p].begin, e = pieces[p].end;
      // Keep key >= bound + 1 (ties pruned) before the cut, >= bound after.
      if (ties == 0 || p > cut_piece) {
        kernels::threshold_keep<I, T>(data<T>(s) + b, prior_at(s, b), e - b, bound, s.keep + b);
      } else if (p < cut_piece) {
        kernels::threshold_keep<I, T>(data<T>(s) + b, prior_at(s, b), e - b, bound + 1, s.keep + b);
      } else {
        kernels::threshold_keep<I, T>(data<T>(s) + b, prior_at(s, b), cut_end - b, bound + 1, s.keep + b);
        kernels::threshold_keep<I, T>(data<T>(s) + cut_end, prior_at(s, cut_end), e - cut_end, bound,
                                      s.keep + cut_end);
      }
    });
  });
  return {};
}

template <class T>
std::ptrdiff_t nm_keep(const T* x, std::size_t rows, std::size_t inner, int n, int m, std::uint8_t* keep) {
  const std::size_t row = static_cast<std::size_t>(m) * inner;
  const std::size_t grain = std::max<std::size_t>(1, kDefaultGrain / std::max<std::size_t>(row, 1));
  // Each chunk checks its rows for NaN just before ranking them (the rows
  // are then in cache); the first NaN of the first failing chunk wins, so
  // the answer does not depend on the thread count.
  std::vector<std::size_t> first(num_chunks(rows, grain), SIZE_MAX);
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    parallel_for(rows, grain, [&](std::size_t b, std::size_t e) {
      const std::size_t len = (e - b) * row;
      const std::size_t bad = kernels::find_nan<I, T>(x + b * row, len);
      if (bad < len) {
        first[b / grain] = b * row + bad;
        return;
      }
      kernels::nm_keep<I, T>(x + b * row, e - b, inner, n, m, keep + b * row);
    });
  });
  for (std::size_t f : first)
    if (f != SIZE_MAX) return static_cast<std::ptrdiff_t>(f);
  return -1;
}

void apply_masks(const std::vector<MaskGroup>& groups) {
  struct Span {
    std::size_t group, begin, end;
  };
  std::vector<Span> spans;
  std::size_t total = 0;
  for (std::size_t g = 0; g < groups.size(); ++g) {
    for (std::size_t b = 0; b < groups[g].n; b += kDefaultGrain)
      spans.push_back({g, b, std::min(groups[g].n, b + kDefaultGrain)});
    total += groups[g].n * groups[g].arrays.size();
  }
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    for_units(spans.size(), total, [&](std::size_t i) {
      {
        const Span& sp = spans[i];
        const MaskGroup& g = groups[sp.group];
        const std::uint8_t* keep = g.keep + sp.begin;
        const std::size_t n = sp.end - sp.begin;
        for (const auto& [ptr, itemsize] : g.arrays) {
          if (itemsize == 2)
            kernels::apply_keep<I, std::uint16_t>(static_cast<std::uint16_t*>(ptr) + sp.begin, keep, n);
          else if (itemsize == 4)
            kernels::apply_keep<I, std::uint32_t>(static_cast<std::uint32_t*>(ptr) + sp.begin, keep, n);
          else
            kernels::apply_keep<I, std::uint64_t>(static_cast<std::uint64_t*>(ptr) + sp.begin, keep, n);
        }
      }
    });
  });
}

template NanPosition magnitude_keep<float>(const std::vector<PruneSegment>&, std::size_t);
template NanPosition magnitude_keep<double>(const std::vector<PruneSegment>&, std::size_t);
template std::ptrdiff_t nm_keep<float>(const float*, std::size_t, std::size_t, int, int, std::uint8_t*);
template std::ptrdiff_t nm_keep<double>(const double*, std::size_t, std::size_t, int, int, std::uint8_t*);

}  // namespace slimgrad
