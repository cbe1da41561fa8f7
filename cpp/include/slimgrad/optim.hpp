// The elementwise optimizer family (the elementwise rows of optim_table.hpp:
// SGD, Adagrad, RMSprop, Adadelta, Adam/AdamW, Adamax, NAdam, RAdam, Lion,
// ASGD, Rprop, Schedule-Free AdamW/SGD) with torch.optim's update rules (the
// reference implementations' for Lion and Schedule-Free), one fused pass per
// array. Each row's per-step constants, scalar reference and SIMD update live
// together in its Rule<A> (src/kernels_optim_rules.hpp).
//
// Layers, as in core.hpp:
//  - kernels::optim_step<Isa>: one sub-range [b, e) of one array, single
//    threaded; the scalar specialization (kernels_optim_scalar.cpp, running
//    Rule<A>::ref) is the oracle, the SIMD one (kernels_optim_simd.hpp,
//    running Rule<A>::simd) uses the same operations in the same order and no
//    FMA contraction, so every ISA gives the same bits (tested).
//  - slimgrad::optim_step: a multi-tensor step over a list of arrays
//    (merging arrays that lie back to back in memory), an optional
//    non-finite scan of all gradients first, work pieces planned by
//    plan_work (threading.hpp) on the thread pool. Elementwise, so results do not depend on
//    the thread count.
//
// Storage: float32 / float64 params do their math in their own type, and
// the state arrays have that type. float16 / bfloat16 params (and grads) do
// their math in float32 on a float32 master copy; the same pass writes the
// master and the rounded param (nearest even, or stochastic: see sr_bits).
// Two options move fewer bytes (StepArgs::bf16_state, master_weights):
//  - bfloat16 state: the state arrays hold bfloat16 (float32 params and
//    float16/bfloat16 params); the math stays float32, each state value is
//    rounded on store (nearest even, or stochastic with a stream of its own
//    per state slot, see state_sr_key) and the step itself uses the
//    unrounded values. Stochastic rounding of state: see state_sr_key.
//  - no master (float16/bfloat16 params): the param itself is widened, updated
//    in float32 and rounded back; Slot::master is null.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <cmath>

#include "slimgrad/isa.hpp"
#include "slimgrad/optim_table.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad {

// Algo (one value per row of optim_table.hpp) and the row's descriptor come
// from the descriptor table; elementwise rows run through optim_step below.
enum class Storage : int { f32, f64, f16, bf16 };

// Everything one step needs besides the arrays. The Python layer sets the
// options (SLIMGRAD_STEP_OPTIONS, optim_table.hpp: one line per option gives
// the field here and its Python attribute); step_constants() derives the
// per-step scalars (bias corrections ...) in double, so every ISA sees the
// same constants. Kernels convert them to the math type once per call.
struct StepArgs {
  Algo algo = Algo::sgd;
  Storage storage = Storage::f32;
#define SLIMGRAD_STEP_FIELD(type, name, value, doc) type name = value;
  SLIMGRAD_STEP_OPTIONS(SLIMGRAD_STEP_FIELD)
#undef SLIMGRAD_STEP_FIELD
  // Per-step constants, filled by step_constants(): first the defaults
  // below, then the row's Rule<A>::constants (kernels_optim_rules.hpp, where
  // each rule says what c0..c3 and flag hold for it).
  //  decay, w: the decay of the square average (beta2; RMSprop alpha,
  //    Adadelta rho) and the lerp weight of the first moment (1 - beta1;
  //    RMSprop's grad_avg 1 - alpha, Schedule-Free ckp1);
  //  wd_scale = 1 - lr * weight_decay (decoupled weight decay);
  //  prologue_wd: the common prologue applies weight decay (Schedule-Free
  //    AdamW applies its own, after the normalization).
  double c0 = 0, c1 = 0, c2 = 0, c3 = 0, wd_scale = 1, decay = 0, w = 0;
  bool flag = false, prologue_wd = true;
};

// Every name in an elementwise row's options string is a StepArgs option.
inline constexpr bool elementwise_options_known() {
  for (const OptimDesc& d : kOptimizers)
    if (d.kind == OptimKind::elementwise && !options_are_fields(d.options)) return false;
  return true;
}
static_assert(elementwise_options_known(), "optim_table.hpp: an elementwise row names an option "
                                           "missing from SLIMGRAD_STEP_OPTIONS");

// Fills the per-step constants of `a` from its options and step.
void step_constants(StepArgs& a);

// One array: raw pointers into the caller's buffers. For float16/bfloat16,
// p and g point to uint16 bit patterns and master to the float32 copy (null
// without master_weights); otherwise master is null. With bf16_state the
// state arrays hold uint16 bfloat16 bit patterns. s[] are the state arrays the algorithm uses, in
// the slots documented at state_slots(). `offset` is the array's first
// element within its list (keys stochastic rounding, so that merging arrays
// does not change results).
struct Slot {
  void* p = nullptr;
  const void* g = nullptr;
  float* master = nullptr;
  void* s[3] = {nullptr, nullptr, nullptr};
  std::size_t n = 0;
  std::uint64_t offset = 0;
};

// The Slot::s indices the step uses for these options: the table row's
// slots whose `when` holds (optim_table.hpp), in slot order. Writes them to
// out[] and returns how many.
int state_slots(const StepArgs& a, int out[3]);

// Elementwise rows fit Slot::s (the fourth slot is for multipass rows).
inline constexpr bool elementwise_rows_fit() {
  for (const OptimDesc& d : kOptimizers)
    if (d.kind == OptimKind::elementwise && d.slots[3].when != SlotWhen::never) return false;
  return true;
}
static_assert(elementwise_rows_fit(), "an elementwise optimizer has at most 3 state slots");

namespace kernels {
template <Isa I>
void optim_step(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e);
// Index of the first NaN/inf among n float16 (bf16 false) or bfloat16 bit
// patterns, or n: widened to float32 (exact, inf/NaN kept) and tested a
// group of vectors at a time, like the core's find_nonfinite.
template <Isa I>
std::size_t find_nonfinite_half(const std::uint16_t* x, std::size_t n, bool bf16);
}  // namespace kernels

// Steps every slot. With check, first scans all gradients; if one holds a
// NaN or inf, sets *bad_slot / *bad_index (first in list order) and returns
// false without writing anything.
bool optim_step(const StepArgs& a, const Slot* slots, std::size_t count, bool check,
                std::size_t* bad_slot, std::size_t* bad_index);

// First non-finite element over a list of arrays of one storage type.
bool find_nonfinite_multi(Storage st, const void* const* arrays, const std::size_t* sizes,
                          std::size_t count, std::size_t* bad_array, std::size_t* bad_index);

// ------------------------------------------------- stochastic rounding
// A counter-based hash of (seed, step, element index): the same bits for any
// thread count, chunking or ISA. sr_key mixes seed and step once per call
// (64-bit); the per-element part works on 32-bit lanes (two murmur3
// finalizer rounds) so AVX2 can compute 8 at a time with vpmulld.
// Inline helpers used from every ISA file: one set of symbols per target (see simd.hpp).
inline namespace SLIMGRAD_TARGET_NAMESPACE {

inline std::uint64_t mix64(std::uint64_t x) {  // splitmix64 finalizer
  return simd::xorshift_multiply<30, 27, 31>(x, 0xBF58476D1CE4E5B9ull, 0x94D049BB133111EBull);
}
inline std::uint64_t sr_key(std::uint64_t seed, std::uint64_t step) {
  return mix64(mix64(seed + 0x9E3779B97F4A7C15ull) ^ (step * 0xD1B54A32D192ED03ull));
}
// Stochastic rounding of bfloat16 state: state slot k takes the 16 bits
// [16 (k % 2), 16 (k % 2) + 16) of sr_bits(state_sr_key(seed, step, k / 2),
// index): a key apart from the param's (sr_key), and disjoint bits of one
// hash for slots 0 and 1, so one hash per element serves both moments.
inline std::uint64_t state_sr_key(std::uint64_t seed, std::uint64_t step, int pair) {
  return mix64(sr_key(seed, step) + static_cast<std::uint64_t>(pair + 1) * 0xA0761D6478BD642Full);
}
// murmur3's finalizer, on a std::uint32_t or on simd::U32<I> lanes.
template <class U>
SLIMGRAD_ALWAYS_INLINE U fmix32(U x) {
  return simd::xorshift_multiply<16, 13, 16>(x, 0x85EBCA6Bu, 0xC2B2AE35u);
}
inline std::uint32_t sr_bits(std::uint64_t key, std::uint64_t index) {
  const auto lo = static_cast<std::uint32_t>(index), hi = static_cast<std::uint32_t>(index >> 32);
  const std::uint32_t a = fmix32(lo * 0x9E3779B1u + static_cast<std::uint32_t>(key));
  return fmix32(a ^ static_cast<std::uint32_t>(key >> 32) ^ (hi * 0x85EBCA77u));
}
// sr_bits(key, index0 + j) in lane j of U = simd::U32<I>; the low 32 bits
// of the index must not wrap within the vector.
template <class U>
SLIMGRAD_ALWAYS_INLINE U sr_bits_lanes(std::uint64_t key, std::uint64_t index0) {
  // (index0 + j) * C + key mod 2^32 = (index0 * C + key) + j * C: one add, no multiply.
  constexpr std::uint32_t C = 0x9E3779B1u;
  const std::uint32_t base = static_cast<std::uint32_t>(index0) * C + static_cast<std::uint32_t>(key);
  const U a = fmix32(U::set1(base) + simd::iota_lanes<U>(0, C));
  const std::uint32_t h =
      static_cast<std::uint32_t>(key >> 32) ^ (static_cast<std::uint32_t>(index0 >> 32) * 0x85EBCA77u);
  return fmix32(a ^ h);
}

// bfloat16: add 16 random bits below the kept ones and truncate, so x rounds
// up with probability (x - down) / (up - down). NaN/inf round to nearest.
inline std::uint16_t bf16_stochastic(float x, std::uint32_t r) {
  if (!std::isfinite(x)) return simd::float_to_bf16(x);
  std::uint32_t bits;
  std::memcpy(&bits, &x, 4);
  return static_cast<std::uint16_t>((bits + (r & 0xFFFFu)) >> 16);
}

// float16 toward zero (finite x).
inline std::uint16_t float_to_half_rtz(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const auto sign = static_cast<std::uint16_t>((x >> 16) & 0x8000);
  x &= 0x7FFFFFFFu;
  if (x >= 0x477FE000u) return sign | 0x7BFF;  // >= 65504: the largest half
  if (x < 0x38800000u) {                       // subnormal half: |f| * 2^24, truncated
    float a;
    std::memcpy(&a, &x, 4);
    return sign | static_cast<std::uint16_t>(a * 16777216.0f);
  }
  return sign | static_cast<std::uint16_t>((x >> 13) - (112u << 10));
}

// float16: the two neighbours `down` (toward zero) and `up` (next away from
// zero); up with probability (|x| - |down|) / (|up| - |down|), computed in
// float32 (exact IEEE operations, identical everywhere). Values beyond the
// largest half, NaN and inf round to nearest.
inline std::uint16_t f16_stochastic(float x, std::uint32_t r) {
  if (!std::isfinite(x) || std::fabs(x) > 65504.0f) return simd::float_to_half(x);
  const std::uint16_t down = float_to_half_rtz(x);
  const float fd = std::fabs(simd::half_to_float(down));
  const float ax = std::fabs(x);
  if (fd == ax) return down;
  const std::uint16_t up = static_cast<std::uint16_t>(down + 1);
  const float fu = std::fabs(simd::half_to_float(up));
  const float frac = (ax - fd) / (fu - fd);
  const float u = static_cast<float>(r >> 8) * 5.9604644775390625e-8f;  // [0, 1) in steps of 2^-24
  return u < frac ? up : down;
}

}  // inline namespace SLIMGRAD_TARGET_NAMESPACE

}  // namespace slimgrad
