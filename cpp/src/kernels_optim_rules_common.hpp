// What every Rule of kernels_optim_rules.hpp sees: the step's scalars in the
// math type (StepConsts) and broadcast to vectors (VConsts), small scalar and
// vector helpers (kept apart, like the rules), the primary Rule template and
// dispatch_rule, the switch over the table's rows that reaches each
// elementwise row's Rule (used by step_constants in optim.cpp, the scalar
// unit and the per-ISA SIMD units). Included by kernels_optim_rules.hpp.
#pragma once

#include <cmath>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "slimgrad/optim.hpp"
#include "slimgrad/simd.hpp"

// The SIMD updates must inline into the loops of run() (kernels_optim_simd.hpp):
// a call per vector (GCC declined to inline update() with bfloat16 state)
// costs more than the memory traffic saved.
#define SLIMGRAD_OPTIM_INLINE inline __attribute__((always_inline))

namespace slimgrad::kernels {
// Compiled with each unit's target flags: one set of symbols per target (simd.hpp).
inline namespace SLIMGRAD_TARGET_NAMESPACE {

// The scalars of one step in the math type T (float for float16/bfloat16
// storage), converted once per kernel call, the same way for every ISA.
// decay / one_minus_decay: StepArgs::decay and 1 - decay (in double);
// w, w_rest: the lerp weight and 1 - w computed in T, as torch's lerp does.
template <class T>
struct StepConsts {
  T lr, neg_lr, wd, eps, momentum, one_minus_dampening, beta1;
  T decay, one_minus_decay, w, w_rest;
  T c0, c1, c2, c3, neg_c0, wd_scale, gscale;
  bool has_gscale;
  // Adam's x / c1 as the float32 product RN(x * inv_c1) taken in double
  // (vdiv_c1), when c1_by_mul; see vdiv_c1 for why the bits are the same.
  double inv_c1;
  bool c1_by_mul;
  bool maximize, nesterov, amsgrad, centered, decoupled, flag, has_wd, has_momentum;

  explicit StepConsts(const StepArgs& a) {
    const auto t = [](double x) { return static_cast<T>(x); };
    lr = t(a.lr);
    neg_lr = t(-a.lr);
    wd = t(a.weight_decay);
    eps = t(a.eps);
    momentum = t(a.momentum);
    one_minus_dampening = t(1.0 - a.dampening);
    beta1 = t(a.beta1);
    decay = t(a.decay);
    one_minus_decay = t(1.0 - a.decay);
    w = t(a.w);
    w_rest = T(1) - w;
    c0 = t(a.c0);
    c1 = t(a.c1);
    c2 = t(a.c2);
    c3 = t(a.c3);
    neg_c0 = -c0;
    wd_scale = t(a.wd_scale);
    gscale = t(a.grad_scale);
    has_gscale = a.grad_scale != 1.0;
    inv_c1 = 1.0 / static_cast<double>(c1);
    c1_by_mul = std::is_same_v<T, float> && c1 >= 0x1p-20f && c1 <= 0x1p20f;
    maximize = a.maximize;
    nesterov = a.nesterov;
    amsgrad = a.amsgrad;
    centered = a.centered;
    decoupled = a.decoupled;
    flag = a.flag;
    // `&`, not `&&`: with a short circuit GCC split the runner into branches
    // and stopped unswitching its loops on the flags (3-4 more instructions
    // per vector in every row's loop).
    has_wd = a.prologue_wd & (a.weight_decay != 0);
    has_momentum = a.momentum != 0;
  }
};

// The same scalars broadcast to vectors, once per kernel call (neg_c0 = -c0).
#define SLIMGRAD_VCONSTS(X)                                                                                    \
  X(lr) X(neg_lr) X(wd) X(eps) X(momentum) X(one_minus_dampening) X(decay) X(one_minus_decay) X(w) X(w_rest)  \
  X(c0) X(c1) X(c2) X(neg_c0) X(wd_scale) X(beta1)
template <class V>
struct VConsts {
#define SLIMGRAD_VFIELD(name) V name;
  SLIMGRAD_VCONSTS(SLIMGRAD_VFIELD)
#undef SLIMGRAD_VFIELD
  explicit VConsts(const StepConsts<typename V::Scalar>& k) {
#define SLIMGRAD_VSET(name) name = V::set1(k.name);
    SLIMGRAD_VCONSTS(SLIMGRAD_VSET)
#undef SLIMGRAD_VSET
  }
};
#undef SLIMGRAD_VCONSTS

// ------------------------------------------------------------- helpers
// Scalar (ref) and vector (simd) forms, kept apart like the rules.
template <class T>
inline T lerp(T self, T end, const StepConsts<T>& k) {
  return k.w < T(0.5) ? self + k.w * (end - self) : end - (end - self) * k.w_rest;
}
template <class V>
SLIMGRAD_OPTIM_INLINE V vlerp(V self, V end, const StepConsts<typename V::Scalar>& k, const VConsts<V>& c) {
  return k.w < typename V::Scalar(0.5) ? self + c.w * (end - self) : end - (end - self) * c.w_rest;
}
// x / c1 with the bits of the float32 division, without the divider: on
// Intel cores the divider bounds Adam's step (sqrt and two divisions per
// element: 0.85 ns per element in cache at 1 thread, slower than memory at
// 2), and a division by a constant need not use it. For float32 x and c1 the
// double product z = RN_d(x * RN_d(1 / c1)) is within 2^-52 (relative) of
// x / c1, while a quotient of two 24-bit significands is never a float
// midpoint and lies at least 2^-49 (relative) from one (|X 2^24 - (2j+1) C|
// >= 1 for integer significands X, C). So RN_f(z) = RN_f(x / c1) whenever
// x / c1 is a normal float: here x = sqrt(v) >= 2^-75 or 0, inf or NaN
// (which the product passes through), and c1 in [2^-20, 2^20] (c1_by_mul).
template <class V>
SLIMGRAD_OPTIM_INLINE V vdiv_c1(V x, const StepConsts<typename V::Scalar>& k, const VConsts<V>& c) {
  if constexpr (std::is_same_v<typename V::Scalar, float>)
    if (k.c1_by_mul) return simd::mul_in_double(x, k.inv_c1);
  return x / c.c1;
}
template <class V>
SLIMGRAD_OPTIM_INLINE V vmax(V a, V b) {  // a < b ? b : a, as the reference
  return simd::select(simd::lt(a, b), b, a);
}
template <class V>
SLIMGRAD_OPTIM_INLINE V vsign(V x) {  // sign(0) = sign(NaN) = 0, as the reference
  using T = typename V::Scalar;
  const V zero = V::zero();
  return simd::select(simd::lt(zero, x), V::set1(T(1)), simd::select(simd::lt(x, zero), V::set1(T(-1)), zero));
}

// --------------------------------------------------------------- rules
// Multipass rows (their own entry points) never instantiate the primary
// template; an elementwise row without its specialization stops the build here.
template <Algo A>
struct Rule {
  static_assert(describe(A).kind != OptimKind::elementwise,
                "an elementwise row of optim_table.hpp needs its Rule<Algo::name> in kernels_optim_rules.hpp");
};

// Calls f(std::integral_constant<Algo, A>{}) for a's row if it is
// elementwise (multipass rows: nothing). One case per table row.
template <class F>
SLIMGRAD_OPTIM_INLINE void dispatch_rule(Algo a, F&& f) {
#define SLIMGRAD_RULE_CASE(name, kind, ...)                                                          \
  case Algo::name:                                                                                   \
    if constexpr (OptimKind::kind == OptimKind::elementwise) f(std::integral_constant<Algo, Algo::name>{}); \
    break;
  switch (a) { SLIMGRAD_OPTIMIZERS(SLIMGRAD_RULE_CASE) }
#undef SLIMGRAD_RULE_CASE
}

}  // inline namespace SLIMGRAD_TARGET_NAMESPACE
}  // namespace slimgrad::kernels
