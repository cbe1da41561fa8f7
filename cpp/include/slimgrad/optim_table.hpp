// The optimizer descriptor table: ONE list, read by both languages.
//
// Each row of SLIMGRAD_OPTIMIZERS gives an optimizer's kernel name, its kind,
// its numeric policy, its option names (StepArgs fields, torch's names) and
// its state slots (key, storage, when the slot exists). From this list come:
//  - the Algo enum and the switches that reach each elementwise row's
//    Rule<Algo::name> (kernels_optim_rules.hpp: dispatch_rule, used by
//    step_constants, the scalar unit and the per-ISA SIMD units);
//  - state_slots() (which Slot::s entries a step uses for given options);
//  - the binding's names (StepArgs.algo accepts exactly the row names) and
//    _core.optim.optimizers(), from which the Python classes take their
//    state keys (slimgrad.optim reads them; no hand-written key lists);
//  - StepArgs's option fields and their Python attributes (SLIMGRAD_STEP_OPTIONS
//    below: optim.hpp and bindings/register_optim.cpp expand it).
// A new elementwise optimizer is one row here plus its Rule<Algo::name>
// (per-step constants, scalar reference, SIMD update) in
// cpp/src/kernels_optim_rules.hpp; a new option is one line of
// SLIMGRAD_STEP_OPTIONS (see docs/architecture.md, "Adding an optimizer").
//
// Row: X(name, kind, policy, options, S0, S1, S2, S3) with each slot
// S = (key, storage, when); unused slots are (_, none, never).
//  kind:    elementwise = one fused pass per element on Slot/StepArgs
//           (optim_step); multipass = its own entry point in optim_extra.cpp
//           (a per-tensor reduction or a factored state between passes).
//  policy:  bit_exact = every ISA gives the scalar reference's bits (no FMA,
//           same operation order); bounded = SIMD may differ from the scalar
//           reference by the documented bound (docs/optim.md), any thread
//           count gives the same bits.
//  storage: math = the step's math type (the param dtype, float32 for
//           float16/bfloat16 params, bfloat16 with state_dtype=bfloat16);
//           i8 / u8 = 8-bit codes shaped like the param; blocks = float32,
//           one per 256-element block; row / col = factored (ndim >= 2)
//           row and column statistics; empty arrays where unused.
//  when:    always | never | momentum (option != 0) | centered | amsgrad |
//           factored (param ndim >= 2) | vector (ndim < 2).
#pragma once

#include <cstddef>
#include <cstdint>

// clang-format off
#define SLIMGRAD_OPTIMIZERS(X)                                                                                \
  X(sgd, elementwise, bit_exact, "lr momentum dampening weight_decay nesterov maximize",                      \
    (momentum_buffer, math, momentum), (_, none, never),                                                      \
    (_, none, never), (_, none, never))                                                                       \
  X(adagrad, elementwise, bit_exact, "lr lr_decay weight_decay eps maximize",                                 \
    (sum, math, always), (_, none, never),                                                                    \
    (_, none, never), (_, none, never))                                                                       \
  X(rmsprop, elementwise, bit_exact, "lr alpha eps weight_decay momentum centered maximize",                  \
    (square_avg, math, always), (momentum_buffer, math, momentum),                                            \
    (grad_avg, math, centered), (_, none, never))                                                             \
  X(adadelta, elementwise, bit_exact, "lr rho eps weight_decay maximize",                                     \
    (square_avg, math, always), (acc_delta, math, always),                                                    \
    (_, none, never), (_, none, never))                                                                       \
  X(adam, elementwise, bit_exact, "lr beta1 beta2 eps weight_decay amsgrad maximize decoupled",               \
    (exp_avg, math, always), (exp_avg_sq, math, always),                                                      \
    (max_exp_avg_sq, math, amsgrad), (_, none, never))                                                        \
  X(adamax, elementwise, bit_exact, "lr beta1 beta2 eps weight_decay maximize",                               \
    (exp_avg, math, always), (exp_inf, math, always),                                                         \
    (_, none, never), (_, none, never))                                                                       \
  X(nadam, elementwise, bit_exact, "lr beta1 beta2 eps weight_decay momentum_decay maximize decoupled",       \
    (exp_avg, math, always), (exp_avg_sq, math, always),                                                      \
    (_, none, never), (_, none, never))                                                                       \
  X(radam, elementwise, bit_exact, "lr beta1 beta2 eps weight_decay maximize decoupled",                      \
    (exp_avg, math, always), (exp_avg_sq, math, always),                                                      \
    (_, none, never), (_, none, never))                                                                       \
  X(lion, elementwise, bit_exact, "lr beta1 beta2 weight_decay maximize",                                     \
    (exp_avg, math, always), (_, none, never),                                                                \
    (_, none, never), (_, none, never))                                                                       \
  X(asgd, elementwise, bit_exact, "lr lambd eta mu weight_decay maximize",                                   \
    (ax, math, always), (_, none, never),                                                                     \
    (_, none, never), (_, none, never))                                                                       \
  X(rprop, elementwise, bit_exact, "lr etaminus etaplus step_size_min step_size_max maximize",                \
    (prev, math, always), (step_size, math, always),                                                          \
    (_, none, never), (_, none, never))                                                                       \
  X(sf_adamw, elementwise, bit_exact, "lr beta1 beta2 eps weight_decay ckp1",                                 \
    (z, math, always), (exp_avg_sq, math, always),                                                            \
    (_, none, never), (_, none, never))                                                                       \
  X(sf_sgd, elementwise, bit_exact, "lr momentum weight_decay ckp1",                                          \
    (z, math, always), (_, none, never),                                                                      \
    (_, none, never), (_, none, never))                                                                       \
  X(lamb, multipass, bounded, "lr beta1 beta2 eps weight_decay",                                              \
    (exp_avg, math, always), (exp_avg_sq, math, always),                                                      \
    (_, none, never), (_, none, never))                                                                       \
  X(adafactor, multipass, bounded, "lr beta2_decay eps1 eps2 d weight_decay maximize",                        \
    (row_var, row, factored), (col_var, col, factored),                                                       \
    (variance, math, vector), (_, none, never))                                                               \
  X(adamw8bit, multipass, bounded, "lr beta1 beta2 eps weight_decay maximize",                                \
    (exp_avg, i8, always), (exp_avg_sq, u8, always),                                                          \
    (exp_avg_scale, blocks, always), (exp_avg_sq_scale, blocks, always))                                    \
  X(muon, multipass, bounded, "lr momentum weight_decay nesterov eps",                                        \
    (momentum_buffer, math, always), (_, none, never),                                                        \
    (_, none, never), (_, none, never))                                                                       \
  X(prodigy, multipass, bounded, "lr beta1 beta2 beta3 eps weight_decay",                                     \
    (exp_avg, math, momentum), (exp_avg_sq, math, always),                                                    \
    (s, math, always), (p0, math, always))
// Muon: its AdamW fallback groups (use_muon=False) hold Adam's exp_avg and
// exp_avg_sq instead (slimgrad.optim._muon). Prodigy: s and p0 are 1-D,
// every slice_p-th element of the flattened param; exp_avg exists when
// beta1 > 0 ("momentum"); the d estimate lives in the param groups
// (slimgrad.optim._prodigy, as prodigyopt keeps it).

// The options of the elementwise family: X(type, name, default, doc), one
// line each. StepArgs (optim.hpp) gets the field `type name = default;` and
// _core.optim.StepArgs the read-write attribute `name` (the Python layer sets
// them by name: keep names and defaults stable). The doc is for the reader
// (not passed to pybind11, so the generated stubs do not change). Names in a
// row's options string above must be among these (static_assert in optim.hpp)
// for elementwise rows; multipass rows take theirs through their own entry
// points.
#define SLIMGRAD_STEP_OPTIONS(X)                                                                            \
  X(bool, stochastic, false, "round float16/bfloat16 params and bfloat16 state stochastically")             \
  X(bool, bf16_state, false, "state arrays are bfloat16 (not for float64 params)")                         \
  X(bool, master_weights, true, "float16/bfloat16 params: a float32 master copy in Slot::master")         \
  X(std::uint64_t, seed, 0, "stochastic rounding stream")                                                 \
  X(std::uint64_t, step, 1, "step count including this step (1 on the first)")                             \
  X(double, lr, 1e-3, "learning rate")                                                                      \
  X(double, weight_decay, 0, "L2 penalty (coupled), or decoupled with `decoupled`")                         \
  X(double, eps, 1e-8, "denominator term")                                                                  \
  X(double, beta1, 0.9, "Adam family: first-moment decay")                                                 \
  X(double, beta2, 0.999, "Adam family: second-moment decay")                                              \
  X(double, alpha, 0.99, "RMSprop: square average decay")                                                  \
  X(double, rho, 0.9, "Adadelta: square average decay")                                                    \
  X(double, momentum, 0, "SGD, RMSprop, Schedule-Free SGD")                                                \
  X(double, dampening, 0, "SGD")                                                                            \
  X(double, lr_decay, 0, "Adagrad")                                                                         \
  X(double, momentum_decay, 4e-3, "NAdam")                                                                  \
  X(double, mu_product, 1, "NAdam: product of mu over the previous steps")                                 \
  X(double, lambd, 1e-4, "ASGD: decay term")                                                                \
  X(double, eta, 1e-2, "ASGD: this step's eta (per-tensor state)")                                         \
  X(double, mu, 1, "ASGD: this step's mu (per-tensor state)")                                              \
  X(double, etaminus, 0.5, "Rprop: step size factor on a sign change")                                     \
  X(double, etaplus, 1.2, "Rprop: step size factor on the same sign")                                      \
  X(double, step_size_min, 1e-6, "Rprop")                                                                   \
  X(double, step_size_max, 50, "Rprop")                                                                     \
  X(double, ckp1, 1, "Schedule-Free: this step's averaging weight c_{k+1}")                                \
  X(double, grad_scale, 1, "fused clipping: every gradient times this first; 1 = off (optim/_clip.py)")    \
  X(bool, maximize, false, "ascend: the gradient negated first")                                            \
  X(bool, nesterov, false, "SGD")                                                                           \
  X(bool, amsgrad, false, "Adam: the running maximum of exp_avg_sq (slot max_exp_avg_sq)")                  \
  X(bool, centered, false, "RMSprop: subtract the squared mean gradient (slot grad_avg)")                  \
  X(bool, decoupled, false, "weight decay scales the param (AdamW) instead of adding to the gradient")
// clang-format on

namespace slimgrad {

enum class OptimKind : int { elementwise, multipass };
enum class NumericPolicy : int { bit_exact, bounded };
enum class SlotStorage : int { none, math, i8, u8, blocks, row, col };
enum class SlotWhen : int { never, always, momentum, centered, amsgrad, factored, vector };

inline constexpr int kMaxSlots = 4;

struct SlotDesc {
  const char* key;  // "_" when unused
  SlotStorage storage;
  SlotWhen when;
};

struct OptimDesc {
  const char* name;
  OptimKind kind;
  NumericPolicy policy;
  const char* options;  // space-separated StepArgs field names
  SlotDesc slots[kMaxSlots];
};

// Every row, in table order. Algo values index this array: both are
// generated from the same list, so they cannot drift apart.
#define SLIMGRAD_SLOT_(key, storage, when) SlotDesc{#key, SlotStorage::storage, SlotWhen::when}
#define SLIMGRAD_SLOT(s) SLIMGRAD_SLOT_ s
#define SLIMGRAD_DESC(name, kind, policy, options, s0, s1, s2, s3)                                           \
  OptimDesc{#name, OptimKind::kind, NumericPolicy::policy, options,                                     \
            {SLIMGRAD_SLOT(s0), SLIMGRAD_SLOT(s1), SLIMGRAD_SLOT(s2), SLIMGRAD_SLOT(s3)}},
inline constexpr OptimDesc kOptimizers[] = {SLIMGRAD_OPTIMIZERS(SLIMGRAD_DESC)};
#undef SLIMGRAD_DESC
#undef SLIMGRAD_SLOT
#undef SLIMGRAD_SLOT_
inline constexpr std::size_t kOptimizerCount = sizeof(kOptimizers) / sizeof(kOptimizers[0]);

#define SLIMGRAD_ENUM(name, ...) name,
enum class Algo : int { SLIMGRAD_OPTIMIZERS(SLIMGRAD_ENUM) };
#undef SLIMGRAD_ENUM

inline constexpr const OptimDesc& describe(Algo a) { return kOptimizers[static_cast<int>(a)]; }

// The option names of SLIMGRAD_STEP_OPTIONS, and whether every name of a
// row's options string is one of them.
#define SLIMGRAD_OPTION_NAME(type, name, value, doc) #name,
inline constexpr const char* kStepOptionNames[] = {SLIMGRAD_STEP_OPTIONS(SLIMGRAD_OPTION_NAME)};
#undef SLIMGRAD_OPTION_NAME

inline constexpr bool is_step_option(const char* word, std::size_t len) {
  for (const char* name : kStepOptionNames) {
    std::size_t j = 0;
    while (j < len && name[j] == word[j]) ++j;
    if (j == len && name[j] == '\0') return true;
  }
  return false;
}

inline constexpr bool options_are_fields(const char* options) {
  for (std::size_t i = 0; options[i] != '\0';) {
    std::size_t len = 0;
    while (options[i + len] != '\0' && options[i + len] != ' ') ++len;
    if (len > 0 && !is_step_option(options + i, len)) return false;
    i += len > 0 ? len : 1;
  }
  return true;
}

}  // namespace slimgrad
