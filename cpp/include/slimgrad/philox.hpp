// Philox-4x32-10: a counter-based random number generator (Salmon, Moraes,
// Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11; the
// constants and round structure of Random123, checked against its
// known-answer vectors in tests/test_nn_dropout.py).
//
// A counter-based generator has no state: the random bits of element i are a
// pure function of (seed, stream, i). That is what makes a random mask the
// same for any thread count, chunking or ISA, and lets a backward pass
// recompute the forward pass's mask instead of storing it.
//
// Mapping used by every slimgrad kernel (and by this header's helpers):
//   key     = (seed low 32 bits, seed high 32 bits)
//   counter = (block low, block high, stream low, stream high), block = index / 4
//   bits(seed, stream, index) = philox4x32(counter, key)[index % 4]
// so one Philox call yields the bits of four consecutive elements. `stream`
// separates independent uses of one seed (e.g. Dropout's call counter).
//
// Every function here is `static inline` (internal linkage) on purpose: this
// header is included by files compiled with different ISA flags (x86-64-v3,
// v4). With ordinary `inline` functions the linker keeps one copy for the
// whole program, possibly the one compiled with AVX-512 instructions, and a
// baseline caller could then execute it on a CPU without them.
#pragma once

#include <cstdint>

namespace slimgrad::philox {

inline constexpr std::uint32_t kMul0 = 0xD2511F53u;
inline constexpr std::uint32_t kMul1 = 0xCD9E8D57u;
inline constexpr std::uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
inline constexpr std::uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1
inline constexpr int kRounds = 10;

struct Block {
  std::uint32_t v[4];
};

// One Philox-4x32-10 evaluation: 4 x 32 random bits for one (counter, key).
static inline Block philox4x32(const std::uint32_t counter[4], const std::uint32_t key[2]) {
  std::uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  std::uint32_t k0 = key[0], k1 = key[1];
  for (int r = 0; r < kRounds; ++r) {
    if (r > 0) {  // the key schedule: a Weyl sequence, bumped before rounds 2..10
      k0 += kWeyl0;
      k1 += kWeyl1;
    }
    const std::uint64_t p0 = static_cast<std::uint64_t>(kMul0) * c0;
    const std::uint64_t p1 = static_cast<std::uint64_t>(kMul1) * c2;
    const auto hi0 = static_cast<std::uint32_t>(p0 >> 32), lo0 = static_cast<std::uint32_t>(p0);
    const auto hi1 = static_cast<std::uint32_t>(p1 >> 32), lo1 = static_cast<std::uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return {{c0, c1, c2, c3}};
}

// The four words of block `block` (elements 4*block .. 4*block+3).
static inline Block block_bits(std::uint64_t seed, std::uint64_t stream, std::uint64_t block) {
  const std::uint32_t counter[4] = {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
                                    static_cast<std::uint32_t>(stream), static_cast<std::uint32_t>(stream >> 32)};
  const std::uint32_t key[2] = {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
  return philox4x32(counter, key);
}

// 32 random bits of element `index`.
static inline std::uint32_t bits(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  return block_bits(seed, stream, index >> 2).v[index & 3];
}

// The top 24 bits as a float in [0, 1): every value is exact, 1.0f is never
// returned (rounding the full 32 bits to float could give 1.0f).
static inline float to_unit_float(std::uint32_t b) { return static_cast<float>(b >> 8) * 0x1p-24f; }

// A uniform float in [0, 1) for element `index` of stream `stream`.
static inline float uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  return to_unit_float(bits(seed, stream, index));
}

}  // namespace slimgrad::philox
