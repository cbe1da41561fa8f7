// The cache of output blocks (see outputs.hpp).
#include "outputs.hpp"

#include <cstdlib>
#include <list>
#include <mutex>
#include <new>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace slimgrad::bind {
namespace {

constexpr std::size_t kPage = 4096;
constexpr std::size_t kHugePage = std::size_t(2) << 20;
constexpr std::size_t kHugePageMinBytes = std::size_t(4) << 20;  // NumPy's threshold for the same advice

// A new block of `bytes` (a multiple of kPage). From 4 MiB on (Linux), it
// starts on a 2 MiB boundary and asks for transparent huge pages, as NumPy
// does for its own arrays: a pass through 4 KiB pages takes a TLB miss
// every 4 KiB (Zen 5 VM, one thread, 4096 x 1024 float32: BatchNorm1d's
// eval forward 1.10-1.11 -> 0.96-0.99 ms, forward + backward 4.7-4.9 ->
// 4.2-4.4 ms). The advice may be refused (THP off): nothing else changes.
void* allocate(std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes >= kHugePageMinBytes) {
    void* p = nullptr;
    if (posix_memalign(&p, kHugePage, bytes) != 0) throw std::bad_alloc();
    madvise(p, bytes, MADV_HUGEPAGE);
    return p;
  }
#endif
  void* p = std::aligned_alloc(64, bytes);
  if (!p) throw std::bad_alloc();
  return p;
}

std::size_t limit_from_env() {
  const char* env = std::getenv("SLIMGRAD_OUTPUT_CACHE_MB");
  if (!env || !*env) return std::size_t(256) << 20;
  char* end = nullptr;
  const unsigned long long mb = std::strtoull(env, &end, 10);
  if (*end != '\0')
    throw py::value_error(std::string("SLIMGRAD_OUTPUT_CACHE_MB: expected a whole number of MiB, got '") + env + "'");
  return static_cast<std::size_t>(mb) << 20;
}

class Cache {
 public:
  Cache() : limit_(limit_from_env()) {}

  void* take(std::size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (auto it = free_.begin(); it != free_.end(); ++it)
        if (it->bytes == bytes) {
          void* p = it->p;
          kept_ -= bytes;
          free_.erase(it);
          return p;
        }
    }
    return allocate(bytes);
  }

  void give(void* p, std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (bytes > limit_) {
      std::free(p);
      return;
    }
    while (kept_ + bytes > limit_) {  // the oldest first
      std::free(free_.back().p);
      kept_ -= free_.back().bytes;
      free_.pop_back();
    }
    free_.push_front({p, bytes});
    kept_ += bytes;
  }

  std::size_t kept() {
    std::lock_guard<std::mutex> lock(mu_);
    return kept_;
  }

  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Block& b : free_) std::free(b.p);
    free_.clear();
    kept_ = 0;
  }

  bool enabled() const { return limit_ > 0; }

 private:
  struct Block {
    void* p;
    std::size_t bytes;
  };
  std::mutex mu_;
  std::list<Block> free_;  // most recently freed first
  std::size_t kept_ = 0;
  const std::size_t limit_;
};

// Never destroyed: arrays may die during interpreter shutdown, after the
// statics of this library would have been.
Cache& cache() {
  static Cache* c = new Cache();
  return *c;
}

}  // namespace

py::array new_output(const py::dtype& dtype, const std::vector<py::ssize_t>& shape) {
  std::size_t count = 1;
  for (py::ssize_t d : shape) count *= static_cast<std::size_t>(d);
  const std::size_t bytes = count * static_cast<std::size_t>(dtype.itemsize());
  Cache& c = cache();
  if (bytes < kMinCachedBytes || !c.enabled()) return py::array(dtype, shape);
  const std::size_t rounded = (bytes + kPage - 1) / kPage * kPage;
  struct Owner {
    void* p;
    std::size_t bytes;
  };
  auto* owner = new Owner{c.take(rounded), rounded};
  py::capsule base(owner, [](void* o) {
    auto* own = static_cast<Owner*>(o);
    cache().give(own->p, own->bytes);
    delete own;
  });
  return py::array(dtype, shape, {}, owner->p, base);
}

std::size_t cached_output_bytes() { return cache().kept(); }
void release_cached_outputs() { cache().release(); }

}  // namespace slimgrad::bind
