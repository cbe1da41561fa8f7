// Threaded, dispatched entry points of the prune kernels (see prune.hpp).
//
// Magnitude selection is exact, over the keys of all segments at once,
// without copying them. Large selections (2^18 elements and more, 0 < k <
// total) first try one pass (coded_select): the sampled key range of step 1
// below, histogrammed by a 7-bit digit while each element's code (below,
// digit, above) goes into its mask byte; then one pass over the codes writes
// the masks and lists the k-th key's bucket, ranked in memory. When the
// guess misses or that bucket is large (many equal keys), the radix select:
//  1. A fixed, stratified sample of 16384 keys guesses a narrow key range
//     [lo, hi] around the k-th smallest; one pass counts exactly the keys
//     below lo and inside [lo, hi] (and finds the largest key: NaN check).
//     If the k-th is inside, the radix select runs on key - lo over only
//     bit_width(hi - lo) bits, with a few percent of the elements as
//     candidates; otherwise on the whole key (the result is exact either way).
//  2. Radix passes, most significant 11-bit digit first: each reads the data
//     and builds per-task histograms of the candidates' next digit; integer
//     counts merge exactly, so the result does not depend on the split.
//  3. One pass writes the masks from the threshold key. If the k-th key is
//     tied, a counting pass per chunk plus a prefix sum first finds the flat
//     position where ties stop being pruned, so the tie rule (lower index
//     first) holds for any thread count.
#include "slimgrad/prune.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>

#include "slimgrad/simd.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad {
namespace {

// A contiguous piece of one segment: the unit of parallel work. Pieces
// depend only on the segment sizes, never on the thread count.
// The core planner's pieces (plan_work, threading.hpp): Piece::array is
// the segment index.
std::vector<Piece> split(const std::vector<PruneSegment>& segments) {
  std::vector<std::size_t> sizes;
  for (const PruneSegment& s : segments) sizes.push_back(s.n);
  return plan_work(sizes.data(), sizes.size()).pieces;
}

// Threads only pay off when each gets at least a chunk of elements: waking
// an OpenMP team costs microseconds (milliseconds on a busy machine), more
// than the whole pass over a small array. Depends on sizes only.
std::size_t worth_threads(std::size_t total_elements, std::size_t units) {
  const std::size_t by_size = std::max<std::size_t>(1, total_elements / kGrain);
  return std::min({units, by_size, static_cast<std::size_t>(get_num_threads())});
}

// Histogram tasks: a few per thread, handed out dynamically, so a thread
// that the OS delays (a shared machine) does not hold up the pass. Each
// task owns a contiguous run of pieces and its own counters; counts merge
// exactly, so the number of tasks never changes a result.
std::size_t task_count(std::size_t total_elements, std::size_t units) {
  const std::size_t threads = worth_threads(total_elements, units);
  return threads > 1 ? std::min(units, 4 * threads) : 1;
}

// body(i) for i in [0, units): in parallel (dynamically scheduled, for the
// same reason) when the work is large enough.
template <class Body>
void for_units(std::size_t units, std::size_t total_elements, Body&& body) {
  if (worth_threads(total_elements, units) > 1) {
    parallel_tasks(units, body);
  } else {
    for (std::size_t i = 0; i < units; ++i) body(i);
  }
}

// body(task, piece) over every piece, each of `tasks` tasks on a
// contiguous run of pieces (its own counters, merged afterwards in task order).
template <class Body>
void for_task_pieces(const std::vector<Piece>& pieces, std::size_t tasks, Body&& body) {
  parallel_tasks(tasks, [&](std::size_t t) {
    for (std::size_t p = pieces.size() * t / tasks; p < pieces.size() * (t + 1) / tasks; ++p) body(t, pieces[p]);
  });
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

// The selection key of element i of a segment, as the kernels compute it.
template <class T>
KeyOf<T> key_of(const PruneSegment& s, std::size_t i) {
  return kernels::key_at(data<T>(s), s.prior, i);
}

// The pair (key, rank in visiting order) of rank r among the keys
// for_each(f) visits (calling f(key) for each, in the same order each time;
// r below their count): the order statistic of the range guess's sample,
// and the first kept element of a listed bucket, whose visiting order is
// flat position (the tie rule). A histogram of the keys' top bits above the
// smallest (bins are key intervals) finds the bin holding rank r, and only
// that bin's pairs (a few unless many keys are equal) are selected among.
// Why not nth_element over all pairs: its compares mispredict about every
// other time on random keys (two over the 16384-key sample took ~180 us on
// the Zen 5 VM, a 5-10K-key bucket 55-135 us; this 30-50 us).
template <class Key, class ForEach>
std::pair<Key, std::size_t> pair_at_rank(ForEach&& for_each, std::size_t r) {
  Key lo = ~Key(0), hi = 0;
  for_each([&](Key k) {
    lo = std::min(lo, k);
    hi = std::max(hi, k);
  });
  constexpr std::size_t kBins = std::size_t(1) << kDigitBits;
  int shift = 0;
  while (((hi - lo) >> shift) >= kBins) ++shift;
  const auto bin_of = [&](Key k) { return static_cast<std::size_t>((k - lo) >> shift); };
  std::vector<std::size_t> hist(kBins, 0);
  for_each([&](Key k) { ++hist[bin_of(k)]; });
  std::size_t bin = 0, before = 0;
  while (before + hist[bin] <= r) before += hist[bin++];
  std::vector<std::pair<Key, std::size_t>> in_bin;
  in_bin.reserve(hist[bin]);
  std::size_t rank = 0;
  for_each([&](Key k) {
    if (bin_of(k) == bin) in_bin.push_back({k, rank});
    ++rank;
  });
  const auto nth = in_bin.begin() + static_cast<std::ptrdiff_t>(r - before);
  std::nth_element(in_bin.begin(), nth, in_bin.end());
  return *nth;
}

template <class Key>
Key key_at_rank(const std::vector<Key>& keys, std::size_t r) {
  return pair_at_rank<Key>([&](auto&& f) { for (const Key k : keys) f(k); }, r).first;
}

}  // namespace

// Flat index of sample key j among `total` (total >= kSampledFrom): keys
// come in groups of kSampleRun, kSampleGap apart (a cache line or two), one
// group per stratum [g total / G, (g + 1) total / G) of the G = kSampleKeys
// / kSampleRun groups, at an offset a fixed hash of g picks.
// - Hashed offsets: evenly spaced keys fell on the same few columns of a
//   matrix whose row length divides total / S times a small number (4096 x
//   4096: columns 512, 1536, 2560 and 3584 only); with weights whose columns
//   differ in scale, as an LLM's do, the guess then missed every time and
//   the selection took the radix select's four reads (9.2 against 2.5 ms,
//   docs/prune.md).
// - Groups: each key was a cache miss and, on 4 KiB pages, a page walk.
// - No division: G is a power of two, and the offset scales the hash by
//   the stratum's room (a 64 x 64 -> 128-bit product's high half).
std::size_t sample_index(std::size_t j, std::size_t total) {
  constexpr std::size_t groups = kSampleKeys / kSampleRun, span = (kSampleRun - 1) * kSampleGap + 1;
  static_assert((groups & (groups - 1)) == 0, "strata by shifts");
  const std::size_t g = j / kSampleRun;
  const std::size_t begin = g * total / groups, end = (g + 1) * total / groups;
  std::uint64_t z = (static_cast<std::uint64_t>(g) + 1) * 0x9E3779B97F4A7C15ull;  // splitmix64's mix
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const auto room = static_cast<std::uint64_t>(end - begin - span + 1);
  const auto offset = static_cast<std::size_t>((static_cast<unsigned __int128>(z) * room) >> 64);
  return begin + offset + (j % kSampleRun) * kSampleGap;
}

namespace {

// A key range [lo, hi] that very likely holds the k-th smallest key, from a
// fixed stratified sample (sample_index: the same for every thread count):
// the sample ranks k / total * S +- 4 standard deviations of a binomial. If
// the guess is wrong the caller notices from exact counts and falls back to
// the full key range; the result is exact either way.
template <class T>
std::pair<KeyOf<T>, KeyOf<T>> guess_range(const std::vector<PruneSegment>& segments, std::size_t total,
                                          std::size_t k) {
  using Key = KeyOf<T>;
  constexpr std::size_t S = kSampleKeys, kPart = 1024;
  // Each group of keys is a cache miss, and on 4 KiB pages a page walk too
  // (groups are 4 total / S elements apart). Loaded as their positions came,
  // with ~60 instructions an iteration, only ~2 misses were in flight: 16384
  // keys a line apart took 370-470 us on one thread of the Zen 5 VM after
  // other traffic, 10-15 % of a 4096 x 4096 selection at 2 threads. So each
  // part first finds its keys and prefetches their lines, then loads them:
  // 80-120 us (on two threads, 95-115 us with the wake-up: so one).
  std::vector<Key> sample(S);
  std::pair<const PruneSegment*, std::size_t> at[kPart];
  std::size_t seg = 0, seg_begin = 0;
  for (std::size_t j0 = 0; j0 < S; j0 += kPart) {
    for (std::size_t j = j0; j < j0 + kPart; ++j) {
      const std::size_t v = sample_index(j, total);  // a flat index over all segments
      while (v >= seg_begin + segments[seg].n) seg_begin += segments[seg++].n;
      at[j - j0] = {&segments[seg], v - seg_begin};
      if (j % kSampleRun == 0) {  // the group's first and last key: one line or two
        simd::prefetch(data<T>(segments[seg]) + (v - seg_begin), 0);
        simd::prefetch(data<T>(segments[seg]) + (v - seg_begin), (kSampleRun - 1) * kSampleGap * sizeof(T));
        if (segments[seg].prior) simd::prefetch(segments[seg].prior + (v - seg_begin), 0);
      }
    }
    for (std::size_t j = j0; j < j0 + kPart; ++j) sample[j] = key_of<T>(*at[j - j0].first, at[j - j0].second);
  }
  const double p = static_cast<double>(k) / static_cast<double>(total);
  const auto margin = static_cast<std::ptrdiff_t>(4.0 * std::sqrt(S * p * (1.0 - p)) + 8.0);
  const auto center = static_cast<std::ptrdiff_t>(p * S);
  const std::ptrdiff_t lo_rank = center - margin, hi_rank = center + margin;
  Key lo = 0, hi = KeyTraits<T>::inf + 1;  // the whole range of non-NaN keys
  if (lo_rank > 0) lo = key_at_rank(sample, static_cast<std::size_t>(lo_rank));
  if (hi_rank < static_cast<std::ptrdiff_t>(S) - 1) hi = key_at_rank(sample, static_cast<std::size_t>(hi_rank));
  return {lo, hi};
}

// The bucket of hist holding the rem-th smallest of the keys it counts (1 <=
// rem <= their total); rem becomes the rank inside that bucket (1-based).
std::size_t bucket_of(const std::vector<std::size_t>& hist, std::size_t& rem) {
  std::size_t b = 0;
  while (rem > hist[b]) rem -= hist[b++];
  return b;
}

int bit_width(std::uint64_t v) {
  int w = 0;
  while (v) {
    ++w;
    v >>= 1;
  }
  return w;
}

// An element listed for ranking by (key, position): its key and where it is.
template <class T>
struct Listed {
  KeyOf<T> key;
  std::size_t segment, index;
};

// Ranks the listed elements (per task, each list in flat order, tasks in
// order, so any thread count gives the same ranking) by (key, position):
// the first `pruned` stay pruned (keep 0), the others are kept.
template <class T>
void keep_ranked(const std::vector<PruneSegment>& segments, const std::vector<std::vector<Listed<T>>>& lists,
                 std::size_t pruned) {
  std::size_t count = 0;
  for (const auto& l : lists) count += l.size();
  if (pruned >= count) return;
  // The lists are in flat order, so (key, rank in that order) orders by
  // (key, position), and the first kept is the pair of rank `pruned`. No
  // concatenated copy of the lists: mapped and unmapped on every call, that
  // buffer cost ~130 us (Zen 5, docs/prune.md).
  const auto first_kept = pair_at_rank<KeyOf<T>>(
      [&](auto&& f) {
        for (const auto& l : lists)
          for (const Listed<T>& e : l) f(e.key);
      },
      pruned);
  std::size_t rank = 0;  // the keep bytes in flat order: ascending addresses
  for (const auto& l : lists)
    for (const Listed<T>& e : l)
      if (std::make_pair(e.key, rank++) >= first_kept) segments[e.segment].keep[e.index] = 1;
}

// Where a selection lists its bucket: per-task lists, and per-task room
// for one piece's positions (and keys). Kept between calls on the calling
// thread, cleared, not freed. Why: a bucket of 42K equal bfloat16 keys
// (4096 x 4096 at 50 %) filled ~2 MB of fresh memory per call, and its ~580
// page faults (~3 us each on these VMs) took 1.7 ms of a 5.3 ms selection
// at one thread. More than kKeptListBytes is freed after the call, so a
// rare huge bucket does not stay.
inline constexpr std::size_t kKeptListBytes = std::size_t(32) << 20;
template <class T>
class ListScratch {
 public:
  ListScratch(std::size_t tasks, std::size_t room) : s_(storage()) {
    s_.lists.resize(std::max(s_.lists.size(), tasks));
    for (auto& l : s_.lists) l.clear();
    s_.pos.resize(tasks * room);
    s_.keys.resize(tasks * room);
  }
  ~ListScratch() {
    std::size_t bytes = s_.pos.capacity() * sizeof(std::uint32_t) + s_.keys.capacity() * sizeof(KeyOf<T>);
    for (const auto& l : s_.lists) bytes += l.capacity() * sizeof(Listed<T>);
    if (bytes > kKeptListBytes) s_ = {};
  }
  ListScratch(const ListScratch&) = delete;
  ListScratch& operator=(const ListScratch&) = delete;
  // lists()[t]: task t's listed elements, in flat order (more lists than
  // tasks may be there, empty).
  std::vector<std::vector<Listed<T>>>& lists() { return s_.lists; }
  std::uint32_t* pos(std::size_t offset) { return s_.pos.data() + offset; }
  KeyOf<T>* keys(std::size_t offset) { return s_.keys.data() + offset; }

 private:
  struct Buffers {
    std::vector<std::vector<Listed<T>>> lists;
    std::vector<std::uint32_t> pos;
    std::vector<KeyOf<T>> keys;
  };
  static Buffers& storage() {
    thread_local Buffers b;
    return b;
  }
  Buffers& s_;
};

// Room for one piece's listed elements, when `count` are listed in all: a
// piece holds at most kGrain elements (plan_work), and each piece's list is
// copied out before the next, so a task needs no more, whatever the total.
std::size_t piece_room(std::size_t count) { return std::min(count, kGrain); }

// The write pass when the k-th key lies in a small bucket [amb_lo, bound):
// keys >= bound are kept, keys below are pruned, and the bucket's elements
// (amb_count of them) are listed per task and ranked: the first amb_rem
// stay pruned, the others are kept.
template <class T>
void write_and_rank(const std::vector<PruneSegment>& segments, const std::vector<Piece>& pieces,
                    std::size_t tasks, KeyOf<T> bound, KeyOf<T> amb_lo, std::size_t amb_count,
                    std::size_t amb_rem) {
  using Key = KeyOf<T>;
  const std::size_t room = piece_room(amb_count);
  ListScratch<T> scratch(tasks, room);
  auto& lists = scratch.lists();
  dispatch([&](auto isa) {
    for_task_pieces(pieces, tasks, [&](std::size_t t, const Piece& pc) {
      const PruneSegment& s = segments[pc.array];
      Key* kt = scratch.keys(t * room);
      std::uint32_t* pt = scratch.pos(t * room);
      const std::size_t got = kernels::threshold_keep<decltype(isa)::value, T>(
          data<T>(s) + pc.begin, prior_at(s, pc.begin), pc.end - pc.begin, bound, amb_lo, s.keep + pc.begin, kt, pt);
      for (std::size_t j = 0; j < got; ++j) lists[t].push_back({kt[j], pc.array, pc.begin + pt[j]});
    });
  });
  keep_ranked(segments, lists, amb_rem);
}

// One histogram pass over every piece (kernels::histogram, per-task
// counters merged in task order): hist gets the candidates' digit counts,
// *below the number of keys below base; returns the largest raw key. With
// `codes`, each element's code goes into its keep byte.
template <class T>
KeyOf<T> histogram_pass(const std::vector<PruneSegment>& segments, const std::vector<Piece>& pieces,
                        std::size_t tasks, KeyOf<T> base, KeyOf<T> prefix, int hi, int lo, bool codes,
                        std::vector<std::size_t>& hist, std::size_t* below) {
  using Key = KeyOf<T>;
  const std::size_t bins = std::size_t(1) << (hi - lo);
  std::vector<std::uint32_t> hists(tasks * kHistCopies * bins, 0);
  std::vector<std::size_t> under(tasks, 0);
  std::vector<Key> maxima(tasks, 0);
  dispatch([&](auto isa) {
    for_task_pieces(pieces, tasks, [&](std::size_t t, const Piece& pc) {
      const PruneSegment& s = segments[pc.array];
      const Key m = kernels::histogram<decltype(isa)::value, T>(
          data<T>(s) + pc.begin, prior_at(s, pc.begin), pc.end - pc.begin, base, prefix, hi, lo,
          hists.data() + t * kHistCopies * bins, &under[t], codes ? s.keep + pc.begin : nullptr);
      maxima[t] = std::max(maxima[t], m);
    });
  });
  hist.assign(bins, 0);
  for (std::size_t c = 0; c < tasks * kHistCopies; ++c)
    for (std::size_t b = 0; b < bins; ++b) hist[b] += hists[c * bins + b];
  *below = 0;
  for (const std::size_t u : under) *below += u;
  return *std::max_element(maxima.begin(), maxima.end());
}

// The one-pass selection (large arrays, 0 < k < total). One read of the
// weights histograms the guessed key range [lo_key, hi_key] (guess_range) by
// its top kCodeBits digit (as the radix select's first pass does by 11
// bits) and writes each element's code into its keep byte. If the k-th key
// lies in the range and its digit's bucket is small, one pass over the
// codes (a quarter of float32's bytes) turns them into the masks and lists
// that bucket, which is ranked in memory. nullopt when the guess missed or the bucket is large (many equal
// keys): the masks are then scratch, and the caller runs the radix select.
// Why: the radix select reads the weights twice (histogram, write pass); a
// read of 4096 x 4096 float32 from memory takes ~2 ms here, two thirds of a
// whole selection from cache (docs/prune.md: 3.7-4.0 -> 2.9-3.1 ms back to
// back).
template <class T>
std::optional<NanPosition> coded_select(const std::vector<PruneSegment>& segments, const std::vector<Piece>& pieces,
                                        std::size_t tasks, std::size_t total, std::size_t k, KeyOf<T> lo_key,
                                        KeyOf<T> hi_key) {
  const int hi = bit_width(static_cast<std::uint64_t>(hi_key - lo_key)), lo = std::max(hi - kCodeBits, 0);
  std::vector<std::size_t> hist;
  std::size_t under = 0;
  if (histogram_pass<T>(segments, pieces, tasks, lo_key, 0, hi, lo, true, hist, &under) > KeyTraits<T>::inf)
    return first_nan<T>(segments);
  std::size_t in_range = 0;
  for (const std::size_t c : hist) in_range += c;
  if (!(under < k && k <= under + in_range)) return std::nullopt;
  std::size_t rem = k - under;  // to prune among the candidates
  const std::size_t b = bucket_of(hist, rem);
  if (hist[b] > collect_max(total)) return std::nullopt;
  // Codes above 1 + b are kept, below pruned; the bucket's first rem by
  // (key, position) stay pruned.
  const auto code = static_cast<std::uint8_t>(1 + b);
  const std::size_t room = piece_room(hist[b]);
  ListScratch<T> scratch(tasks, room);
  auto& lists = scratch.lists();
  dispatch([&](auto isa) {
    for_task_pieces(pieces, tasks, [&](std::size_t t, const Piece& pc) {
      const PruneSegment& s = segments[pc.array];
      std::uint32_t* pt = scratch.pos(t * room);
      const std::size_t got =
          kernels::codes_keep<decltype(isa)::value>(s.keep + pc.begin, pc.end - pc.begin, code, pt);
      for (std::size_t j = 0; j < got; ++j) lists[t].push_back({0, pc.array, pc.begin + pt[j]});
    });
  });
  if (lo == 0) {  // a code per key: the bucket's keys are all equal, ranked by position alone
    std::size_t rank = 0;
    for (const auto& l : lists)
      for (const Listed<T>& e : l)
        if (rank++ >= rem) segments[e.segment].keep[e.index] = 1;
    return NanPosition{};
  }
  // The bucket's keys, read from the weights: every one a cache miss (the
  // pass over them ended long ago), so in batches whose lines are all
  // prefetched first. Read right after codes_keep listed each, with few
  // other instructions to overlap them, they took ~20 % of the selection's
  // serial time here (perf, Zen 5).
  constexpr std::size_t kBatch = 256;
  for (auto& list : lists)
    for (std::size_t i0 = 0; i0 < list.size(); i0 += kBatch) {
      const std::size_t i1 = std::min(list.size(), i0 + kBatch);
      for (std::size_t i = i0; i < i1; ++i) {
        const PruneSegment& s = segments[list[i].segment];
        simd::prefetch(data<T>(s) + list[i].index, 0);
        if (s.prior) simd::prefetch(s.prior + list[i].index, 0);
      }
      for (std::size_t i = i0; i < i1; ++i) list[i].key = key_of<T>(segments[list[i].segment], list[i].index);
    }
  keep_ranked(segments, lists, rem);
  return NanPosition{};
}

}  // namespace

template <class T>
NanPosition magnitude_keep(const std::vector<PruneSegment>& segments, std::size_t k) {
  using Key = KeyOf<T>;
  const std::vector<Piece> pieces = split(segments);
  if (pieces.empty()) return {};
  std::size_t total = 0;
  for (const PruneSegment& s : segments) total += s.n;
  const std::size_t tasks = task_count(total, pieces.size());
  const bool sampled = total >= kSampledFrom && k > 0 && k < total;
  // The guessed key range around the k-th key: the one-pass selection's,
  // then the radix select's first pass if that one gives up.
  Key lo_key = 0, hi_key = 0;
  if (sampled) {
    std::tie(lo_key, hi_key) = guess_range<T>(segments, total, k);
    if (const auto done = coded_select<T>(segments, pieces, tasks, total, k, lo_key, hi_key)) return *done;
  }

  // One radix pass: merged histogram of the candidates' digit [lo, hi) of
  // key - base, the number of keys below base, the largest raw key.
  std::vector<std::size_t> hist;
  auto radix_pass = [&](Key base, Key prefix, int hi, int lo, std::size_t* below_base) {
    return histogram_pass<T>(segments, pieces, tasks, base, prefix, hi, lo, false, hist, below_base);
  };

  // First pass: the NaN check, the keys below the guessed range, and the
  // top digit of the keys in it; the whole key range if the guess missed.
  Key base = 0;
  int width = KeyTraits<T>::bits;
  if (sampled) {
    base = lo_key;
    width = bit_width(static_cast<std::uint64_t>(hi_key - lo_key));
  }
  std::size_t below = 0;
  int hi = width, lo = std::max(width - kDigitBits, 0);
  if (radix_pass(base, 0, hi, lo, &below) > KeyTraits<T>::inf) return first_nan<T>(segments);
  std::size_t in_range = 0;
  for (std::size_t c : hist) in_range += c;
  if (k > 0 && !(below < k && k <= below + in_range)) {  // the guess missed
    base = 0;
    hi = KeyTraits<T>::bits;
    lo = hi - kDigitBits;
    radix_pass(base, 0, hi, lo, &below);
  }

  Key bound = 0;         // keys below bound are pruned ...
  std::size_t ties = 0;  // ... and the first `ties` keys equal to bound too,
  // or: the keys in [amb_lo, bound) (amb_count of them, a narrow bucket) are
  // listed by the write pass and the first amb_rem in (key, position)
  // order stay pruned.
  Key amb_lo = 0;
  std::size_t amb_rem = 0, amb_count = 0;
  if (k > 0) {
    std::size_t rem = k - below;  // to prune among the candidates
    Key prefix = 0;               // digits chosen so far: the candidates' (key - base) >> hi
    while (true) {
      const std::size_t b = bucket_of(hist, rem);
      prefix = (prefix << (hi - lo)) | static_cast<Key>(b);
      // Clamped so that it stays a valid (signed-comparable) key bound.
      const Key bucket_end = std::min<Key>(base + ((prefix + 1) << lo), KeyTraits<T>::inf + 2);
      if (rem == hist[b]) {  // the whole bucket is pruned: no ties to break
        bound = bucket_end;
        break;
      }
      if (hist[b] <= collect_max(total)) {  // few enough to rank in memory
        bound = bucket_end;
        amb_lo = base + (prefix << lo);
        amb_rem = rem;
        amb_count = hist[b];
        break;
      }
      if (lo == 0) {  // a full key, held by hist[b] > rem elements
        bound = base + prefix;
        ties = rem;
        break;
      }
      hi = lo;
      lo = std::max(hi - kDigitBits, 0);
      std::size_t ignored;
      radix_pass(base, prefix, hi, lo, &ignored);
    }
  }

  // Position of the last tie to prune: (piece, offset in piece); pieces
  // before it prune all ties, pieces after it none.
  std::size_t cut_piece = 0, cut_end = 0;
  if (ties > 0) {
    std::vector<std::size_t> counts(pieces.size());
    dispatch([&](auto isa) {
      for_units(pieces.size(), total, [&](std::size_t p) {
        const PruneSegment& s = segments[pieces[p].array];
        counts[p] = kernels::count_equal<decltype(isa)::value, T>(
            data<T>(s) + pieces[p].begin, prior_at(s, pieces[p].begin), pieces[p].end - pieces[p].begin, bound);
      });
    });
    std::size_t left = ties;
    while (counts[cut_piece] < left) left -= counts[cut_piece++];
    // Scan the piece for its left-th tie (scalar oracle keys, via count).
    const Piece& pc = pieces[cut_piece];
    const PruneSegment& s = segments[pc.array];
    std::size_t i = pc.begin;
    dispatch([&](auto isa) {
      for (; left > 0; ++i)
        left -= kernels::count_equal<decltype(isa)::value, T>(data<T>(s) + i, prior_at(s, i), 1, bound);
    });
    cut_end = i;  // ties at segment index < cut_end in this piece are pruned
  }

  if (amb_count > 0) {
    write_and_rank<T>(segments, pieces, tasks, bound, amb_lo, amb_count, amb_rem);
    return {};
  }
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    for_units(pieces.size(), total, [&](std::size_t p) {
      const PruneSegment& s = segments[pieces[p].array];
      const std::size_t b = pieces[p].begin, e = pieces[p].end;
      auto write = [&](std::size_t from, std::size_t to, Key keep_from) {
        kernels::threshold_keep<I, T>(data<T>(s) + from, prior_at(s, from), to - from, keep_from, keep_from,
                                      s.keep + from, nullptr, nullptr);
      };
      // Keep key >= bound + 1 (ties pruned) before the cut, >= bound after.
      if (ties == 0 || p > cut_piece) {
        write(b, e, bound);
      } else if (p < cut_piece) {
        write(b, e, bound + 1);
      } else {
        write(b, cut_end, bound + 1);
        write(cut_end, e, bound);
      }
    });
  });
  return {};
}

template <class T>
NanPosition magnitude_counts(const std::vector<PruneSegment>& segments, std::size_t k,
                             std::vector<std::size_t>& counts) {
  using Key = KeyOf<T>;
  counts.assign(segments.size(), 0);
  const std::vector<Piece> pieces = split(segments);
  if (pieces.empty()) return {};
  std::size_t total = 0;
  for (const PruneSegment& s : segments) total += s.n;
  const std::size_t tasks = task_count(total, pieces.size());
  // Radix passes over the whole key, most significant digit first, until the
  // k-th key T is one key: rem of its copies are then pruned, in flat order.
  std::vector<std::size_t> hist;
  std::size_t below = 0;
  int hi = KeyTraits<T>::bits, lo = std::max(hi - kDigitBits, 0);
  if (histogram_pass<T>(segments, pieces, tasks, 0, 0, hi, lo, false, hist, &below) > KeyTraits<T>::inf)
    return first_nan<T>(segments);
  if (k == 0) return {};
  std::size_t rem = k;
  Key prefix = 0;
  while (true) {
    prefix = (prefix << (hi - lo)) | static_cast<Key>(bucket_of(hist, rem));
    if (lo == 0) break;
    hi = lo;
    lo = std::max(hi - kDigitBits, 0);
    histogram_pass<T>(segments, pieces, tasks, 0, prefix, hi, lo, false, hist, &below);
  }
  // Per piece: the keys below T and equal to T (a histogram of one bin
  // based at T), summed per segment; T's copies go to the segments in order.
  std::vector<std::size_t> under(pieces.size(), 0), equal(pieces.size(), 0);
  dispatch([&](auto isa) {
    for_units(pieces.size(), total, [&](std::size_t p) {
      const PruneSegment& s = segments[pieces[p].array];
      std::uint32_t one[kHistCopies] = {};
      kernels::histogram<decltype(isa)::value, T>(data<T>(s) + pieces[p].begin, prior_at(s, pieces[p].begin),
                                                  pieces[p].end - pieces[p].begin, prefix, 0, 0, 0, one, &under[p],
                                                  nullptr);
      for (const std::uint32_t c : one) equal[p] += c;
    });
  });
  for (std::size_t p = 0; p < pieces.size(); ++p) {
    const std::size_t ties = std::min(rem, equal[p]);
    counts[pieces[p].array] += under[p] + ties;
    rem -= ties;
  }
  return {};
}

template <class T>
std::ptrdiff_t nm_keep(const T* x, std::size_t rows, std::size_t inner, int n, int m, std::uint8_t* keep) {
  const std::size_t row = static_cast<std::size_t>(m) * inner;
  const std::size_t grain = std::max<std::size_t>(1, kGrain / std::max<std::size_t>(row, 1));
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
    for (std::size_t b = 0; b < groups[g].n; b += kGrain)
      spans.push_back({g, b, std::min(groups[g].n, b + kGrain)});
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
          if (itemsize == 1)
            kernels::apply_keep<I, std::uint8_t>(static_cast<std::uint8_t*>(ptr) + sp.begin, keep, n);
          else if (itemsize == 2)
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

template <class Key>
std::vector<Key> keys_at_ranks(const std::vector<Key>& keys, const std::vector<std::size_t>& ranks) {
  std::vector<Key> out;
  for (const std::size_t r : ranks) out.push_back(key_at_rank(keys, r));
  return out;
}

template <class T>
KeyOf<T> histogram_at_level(const T* x, const std::uint8_t* prior, std::size_t n, KeyOf<T> base, KeyOf<T> prefix,
                            int hi, int lo, std::vector<std::size_t>& hist, std::size_t* below,
                            std::uint8_t* codes) {
  if (n == 0) {  // no pieces: nothing to count
    hist.assign(std::size_t(1) << (hi - lo), 0);
    *below = 0;
    return 0;
  }
  const std::vector<PruneSegment> segments{{x, prior, n, codes}};
  const std::vector<Piece> pieces = split(segments);
  return histogram_pass<T>(segments, pieces, task_count(n, pieces.size()), base, prefix, hi, lo, codes != nullptr,
                           hist, below);
}

#define SLIMGRAD_PRUNE_ENTRIES(T)                                                                              \
  template NanPosition magnitude_keep<T>(const std::vector<PruneSegment>&, std::size_t);                       \
  template NanPosition magnitude_counts<T>(const std::vector<PruneSegment>&, std::size_t,                       \
                                           std::vector<std::size_t>&);                                          \
  template KeyOf<T> histogram_at_level(const T*, const std::uint8_t*, std::size_t, KeyOf<T>, KeyOf<T>, int, int, \
                                       std::vector<std::size_t>&, std::size_t*, std::uint8_t*);                 \
  template std::ptrdiff_t nm_keep<T>(const T*, std::size_t, std::size_t, int, int, std::uint8_t*);
SLIMGRAD_PRUNE_ENTRIES(float)
SLIMGRAD_PRUNE_ENTRIES(double)
SLIMGRAD_PRUNE_ENTRIES(Float16)
SLIMGRAD_PRUNE_ENTRIES(BFloat16)
#undef SLIMGRAD_PRUNE_ENTRIES
template std::vector<std::uint32_t> keys_at_ranks(const std::vector<std::uint32_t>&, const std::vector<std::size_t>&);
template std::vector<std::uint64_t> keys_at_ranks(const std::vector<std::uint64_t>&, const std::vector<std::size_t>&);

}  // namespace slimgrad
