// The update rules of the elementwise optimizer family, one Rule<Algo::name>
// per elementwise row of optim_table.hpp. A rule holds, for its algorithm:
//  - constants(StepArgs&): the per-step constants (bias corrections ...) in
//    double, called once per step by step_constants() (optim.cpp) after the
//    defaults (c0..c3 and flag as the rule says; decay = beta2, w = 1 - beta1,
//    prologue_wd on);
//  - ref<T>(k, p, g, s, i): the scalar reference, one element in T (the
//    oracle): plain C++, run by kernels_optim_scalar.cpp (baseline flags);
//  - simd<V>(k, c, p, g, st): the same update on one vector of simd.hpp's
//    Vec, run by kernels_optim_simd.hpp in the per-ISA units.
// ref and simd are written out separately on purpose (the oracle must not
// share its formula with what it checks), in the same operations and order:
// torch's addcmul self + (value * t1) * t2, addcdiv self + (value * t1) / t2,
// lerp self + w (end - self) for w < 0.5, else end - (end - self)(1 - w).
// No FMA: the units running ref and simd are compiled with -ffp-contract=off
// (the scalar unit and the "exact" optim area in CMakeLists.txt), so every ISA
// gives the scalar reference's bits; constants() runs in optim.cpp (baseline
// x86-64, no FMA instructions), once per step, for every ISA alike.
// Both see g after the common prologue of their runner (maximize, then
// coupled weight decay g + wd p or decoupled p * wd_scale when
// prologue_wd); storage, half precision, bfloat16 state, tails, threading
// and the non-finite scan are the runners' business. State slot j (the
// row's slots in optim_table.hpp) is s.ld(j, i) / s.st(j, i, x) in ref,
// st.ld(j) / st.st(j, x) in simd.
// A new elementwise optimizer: its row in optim_table.hpp and its Rule here;
// the switches reaching it (dispatch_rule) come from the table. Multipass
// rows have no Rule (their own entry points in optim_extra.cpp).
#pragma once

#include <cmath>
#include <cstddef>
#include <utility>

#include "kernels_optim_rules_common.hpp"

namespace slimgrad::kernels {
inline namespace SLIMGRAD_TARGET_NAMESPACE {

// Adam's moments (Adam, NAdam, RAdam): m = lerp(m, g, 1 - beta1) in slot 0,
// v = v beta2 + ((1 - beta2) g) g in slot 1, both stored; returns {m, v}.
// The SIMD form writes through references: a returned pair of vectors made
// GCC keep m and v on the stack in the Adam loop.
template <class T, class S>
inline std::pair<T, T> adam_moments(const StepConsts<T>& k, T g, const S& s, std::size_t i) {
  const T m = lerp(s.ld(0, i), g, k);
  const T v = s.ld(1, i) * k.decay + (k.one_minus_decay * g) * g;
  s.st(0, i, m);
  s.st(1, i, v);
  return {m, v};
}

template <class V, class S>
SLIMGRAD_OPTIM_INLINE void vadam_moments(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V g,
                                         const S& st, V& m, V& v) {
  m = vlerp(st.ld(0), g, k, c);
  v = st.ld(1) * c.decay + (c.one_minus_decay * g) * g;
  st.st(0, m);
  st.st(1, v);
}

// torch.optim.SGD. flag = first step (the momentum buffer starts at g).
template <>
struct Rule<Algo::sgd> {
  static void constants(StepArgs& a) { a.flag = a.step == 1; }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    if (k.has_momentum) {
      const T buf = k.flag ? g : s.ld(0, i) * k.momentum + k.one_minus_dampening * g;
      s.st(0, i, buf);
      g = k.nesterov ? g + k.momentum * buf : buf;
    }
    return p + k.neg_lr * g;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    if (k.has_momentum) {
      const V buf = k.flag ? g : st.ld(0) * c.momentum + c.one_minus_dampening * g;
      st.st(0, buf);
      g = k.nesterov ? g + c.momentum * buf : buf;
    }
    return p + c.neg_lr * g;
  }
};

// torch.optim.Adagrad. c0 = lr / (1 + (step - 1) lr_decay).
template <>
struct Rule<Algo::adagrad> {
  static void constants(StepArgs& a) { a.c0 = a.lr / (1.0 + (static_cast<double>(a.step) - 1.0) * a.lr_decay); }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const T sum = s.ld(0, i) + g * g;
    s.st(0, i, sum);
    return p + (-k.c0 * g) / (std::sqrt(sum) + k.eps);
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>&, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    const V sum = st.ld(0) + g * g;
    st.st(0, sum);
    return p + (c.neg_c0 * g) / (sqrt(sum) + c.eps);
  }
};

// torch.optim.RMSprop. decay = alpha; w = 1 - alpha (grad_avg's lerp).
template <>
struct Rule<Algo::rmsprop> {
  static void constants(StepArgs& a) {
    a.decay = a.alpha;
    a.w = 1.0 - a.alpha;
  }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const T sq = s.ld(0, i) * k.decay + (k.one_minus_decay * g) * g;
    s.st(0, i, sq);
    T avg;
    if (k.centered) {
      const T ga = lerp(s.ld(2, i), g, k);
      s.st(2, i, ga);
      avg = std::sqrt(sq - ga * ga) + k.eps;
    } else {
      avg = std::sqrt(sq) + k.eps;
    }
    if (k.has_momentum) {
      const T buf = s.ld(1, i) * k.momentum + g / avg;
      s.st(1, i, buf);
      return p + k.neg_lr * buf;
    }
    return p + (k.neg_lr * g) / avg;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    const V sq = st.ld(0) * c.decay + (c.one_minus_decay * g) * g;
    st.st(0, sq);
    V avg;
    if (k.centered) {
      const V ga = vlerp(st.ld(2), g, k, c);
      st.st(2, ga);
      avg = sqrt(sq - ga * ga) + c.eps;
    } else {
      avg = sqrt(sq) + c.eps;
    }
    if (k.has_momentum) {
      const V buf = st.ld(1) * c.momentum + g / avg;
      st.st(1, buf);
      return p + c.neg_lr * buf;
    }
    return p + (c.neg_lr * g) / avg;
  }
};

// torch.optim.Adadelta. decay = rho.
template <>
struct Rule<Algo::adadelta> {
  static void constants(StepArgs& a) { a.decay = a.rho; }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const T sq = s.ld(0, i) * k.decay + (k.one_minus_decay * g) * g;
    s.st(0, i, sq);
    const T std_ = std::sqrt(sq + k.eps);
    const T delta = (std::sqrt(s.ld(1, i) + k.eps) / std_) * g;
    s.st(1, i, s.ld(1, i) * k.decay + (k.one_minus_decay * delta) * delta);
    return p + k.neg_lr * delta;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>&, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    const V sq = st.ld(0) * c.decay + (c.one_minus_decay * g) * g;
    st.st(0, sq);
    const V acc = st.ld(1);
    const V delta = (sqrt(acc + c.eps) / sqrt(sq + c.eps)) * g;
    st.st(1, acc * c.decay + (c.one_minus_decay * delta) * delta);
    return p + c.neg_lr * delta;
  }
};

// torch.optim.Adam / AdamW (decoupled). c0 = lr / bc1, c1 = sqrt(bc2).
template <>
struct Rule<Algo::adam> {
  static void constants(StepArgs& a) {
    const double t = static_cast<double>(a.step);
    const double bc1 = 1.0 - std::pow(a.beta1, t), bc2 = 1.0 - std::pow(a.beta2, t);
    a.c0 = a.lr / bc1;
    a.c1 = std::sqrt(bc2);
  }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const auto [m, v] = adam_moments(k, g, s, i);
    T vh = v;
    if (k.amsgrad) {
      vh = s.ld(2, i) < v ? v : s.ld(2, i);
      s.st(2, i, vh);
    }
    const T den = std::sqrt(vh) / k.c1 + k.eps;
    return p + (-k.c0 * m) / den;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    V m, v;
    vadam_moments(k, c, g, st, m, v);
    V vh = v;
    if (k.amsgrad) {
      vh = vmax(st.ld(2), v);
      st.st(2, vh);
    }
    return p + (c.neg_c0 * m) / (vdiv_c1(sqrt(vh), k, c) + c.eps);
  }
};

// torch.optim.Adamax. c0 = lr / bc1.
template <>
struct Rule<Algo::adamax> {
  static void constants(StepArgs& a) { a.c0 = a.lr / (1.0 - std::pow(a.beta1, static_cast<double>(a.step))); }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const T m = lerp(s.ld(0, i), g, k);
    const T a = s.ld(1, i) * k.decay;
    const T b = std::fabs(g) + k.eps;
    const T u = a < b ? b : a;
    s.st(0, i, m);
    s.st(1, i, u);
    return p + (-k.c0 * m) / u;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    const V m = vlerp(st.ld(0), g, k, c);
    const V u = vmax(st.ld(1) * c.decay, abs(g) + c.eps);
    st.st(0, m);
    st.st(1, u);
    return p + (c.neg_c0 * m) / u;
  }
};

// torch.optim.NAdam. c0 = bc2, c1 = -lr (1 - mu) / (1 - mu_product'),
// c2 = -lr mu' / (1 - mu_product''), c3 = mu_product' (the new product, read
// back by the Python layer through StepArgs.c3).
template <>
struct Rule<Algo::nadam> {
  static void constants(StepArgs& a) {
    const double t = static_cast<double>(a.step);
    const double mu = a.beta1 * (1.0 - 0.5 * std::pow(0.96, t * a.momentum_decay));
    const double mu_next = a.beta1 * (1.0 - 0.5 * std::pow(0.96, (t + 1.0) * a.momentum_decay));
    const double prod = a.mu_product * mu, prod_next = prod * mu_next;
    a.c0 = 1.0 - std::pow(a.beta2, t);
    a.c1 = -a.lr * (1.0 - mu) / (1.0 - prod);
    a.c2 = (-a.lr * mu_next) / (1.0 - prod_next);
    a.c3 = prod;
  }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const auto [m, v] = adam_moments(k, g, s, i);
    const T den = std::sqrt(v / k.c0) + k.eps;
    p = p + (k.c1 * g) / den;
    return p + (k.c2 * m) / den;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    V m, v;
    vadam_moments(k, c, g, st, m, v);
    const V den = sqrt(v / c.c0) + c.eps;
    p = p + (c.c1 * g) / den;
    return p + (c.c2 * m) / den;
  }
};

// torch.optim.RAdam. c0 = bc1, c1 = sqrt(bc2), c2 = the rectification,
// flag = rho_t > 5 (else the unadapted step).
template <>
struct Rule<Algo::radam> {
  static void constants(StepArgs& a) {
    const double t = static_cast<double>(a.step);
    const double bc1 = 1.0 - std::pow(a.beta1, t), bc2 = 1.0 - std::pow(a.beta2, t);
    const double rho_inf = 2.0 / (1.0 - a.beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * t * std::pow(a.beta2, t) / bc2;
    a.c0 = bc1;
    a.c1 = std::sqrt(bc2);
    a.flag = rho_t > 5.0;
    a.c2 = a.flag ? std::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                  : 0.0;
  }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const auto [m, v] = adam_moments(k, g, s, i);
    const T bm = m / k.c0;
    if (k.flag) return p - ((bm * k.lr) * (k.c1 / (std::sqrt(v) + k.eps))) * k.c2;
    return p - bm * k.lr;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    V m, v;
    vadam_moments(k, c, g, st, m, v);
    const V bm = m / c.c0;
    if (k.flag) return p - ((bm * c.lr) * (c.c1 / (sqrt(v) + c.eps))) * c.c2;
    return p - bm * c.lr;
  }
};

// Lion (Chen et al. 2023). Its weight decay is always decoupled.
template <>
struct Rule<Algo::lion> {
  static void constants(StepArgs& a) { a.decoupled = true; }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const T m = s.ld(0, i);
    const T u = k.beta1 * m + k.w * g;
    s.st(0, i, k.decay * m + k.one_minus_decay * g);
    const T sign = static_cast<T>((T(0) < u) - (u < T(0)));  // sign(0) = sign(NaN) = 0
    return p + k.neg_lr * sign;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>&, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    const V m = st.ld(0);
    const V u = c.beta1 * m + c.w * g;
    st.st(0, c.decay * m + c.one_minus_decay * g);
    return p + c.neg_lr * vsign(u);
  }
};

// torch.optim.ASGD: decay, step, then the average ax. c0 = 1 - lambd eta,
// c1 = -eta, c2 = mu, flag = mu != 1 (else ax = p).
template <>
struct Rule<Algo::asgd> {
  static void constants(StepArgs& a) {
    a.c0 = 1.0 - a.lambd * a.eta;
    a.c1 = -a.eta;
    a.c2 = a.mu;
    a.flag = a.mu != 1.0;
  }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    p = p * k.c0;
    p = p + k.c1 * g;
    s.st(0, i, k.flag ? s.ld(0, i) + (p - s.ld(0, i)) * k.c2 : p);
    return p;
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    p = p * c.c0;
    p = p + c.c1 * g;
    st.st(0, k.flag ? st.ld(0) + (p - st.ld(0)) * c.c2 : p);
    return p;
  }
};

// torch.optim.Rprop; a sign change zeroes the gradient. c0 = etaminus,
// c1 = etaplus, c2 = step_size_min, c3 = step_size_max.
template <>
struct Rule<Algo::rprop> {
  static void constants(StepArgs& a) {
    a.c0 = a.etaminus;
    a.c1 = a.etaplus;
    a.c2 = a.step_size_min;
    a.c3 = a.step_size_max;
  }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const T prod = g * s.ld(0, i);
    const T f = T(0) < prod ? k.c1 : prod < T(0) ? k.c0 : T(1);
    T ss = s.ld(1, i) * f;
    ss = ss < k.c2 ? k.c2 : ss;  // torch's clamp: max with the lower bound first
    ss = k.c3 < ss ? k.c3 : ss;
    const T gm = prod < T(0) ? T(0) : g;
    const T sign = static_cast<T>((T(0) < gm) - (gm < T(0)));
    s.st(0, i, gm);
    s.st(1, i, ss);
    return p - sign * ss;
  }
  // Comparisons and selects only (no branches on data).
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    using T = typename V::Scalar;
    using simd::lt;
    using simd::select;
    const V zero = V::zero(), hi = V::set1(k.c3);
    const V prod = g * st.ld(0);
    const V f = select(lt(zero, prod), c.c1, select(lt(prod, zero), c.c0, V::set1(T(1))));
    V ss = st.ld(1) * f;
    ss = select(lt(ss, c.c2), c.c2, ss);
    ss = select(lt(hi, ss), hi, ss);
    const V gm = select(lt(prod, zero), zero, g);
    st.st(0, gm);
    st.st(1, ss);
    return p - vsign(gm) * ss;
  }
};

// The Schedule-Free step with the (normalized) gradient u: y moves toward z
// (lerp weight ckp1), z -= lr u (slot 0), y += c1 u. p holds y.
template <class T, class S>
inline T schedule_free(const StepConsts<T>& k, T p, T u, const S& s, std::size_t i) {
  const T z = s.ld(0, i);
  p = lerp(p, z, k);
  s.st(0, i, z - k.lr * u);
  return p + k.c1 * u;
}
template <class V, class S>
SLIMGRAD_OPTIM_INLINE V vschedule_free(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V u,
                                       const S& st) {
  const V z = st.ld(0);
  p = vlerp(p, z, k, c);
  st.st(0, z - c.lr * u);
  return p + c.c1 * u;
}

// schedulefree.AdamWScheduleFree; p holds y. w = ckp1, c0 = 1 - beta2^step,
// c1 = lr (beta1 (1 - ckp1) - 1); its weight decay is added after the
// normalization (at y), so the prologue's is off.
template <>
struct Rule<Algo::sf_adamw> {
  static void constants(StepArgs& a) {
    a.w = a.ckp1;
    a.prologue_wd = false;
    a.c0 = 1.0 - std::pow(a.beta2, static_cast<double>(a.step));
    a.c1 = a.lr * (a.beta1 * (1.0 - a.ckp1) - 1.0);
  }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    const T v = s.ld(1, i) * k.decay + (k.one_minus_decay * g) * g;
    s.st(1, i, v);
    T gn = g / (std::sqrt(v / k.c0) + k.eps);
    if (k.wd != T(0)) gn = gn + k.wd * p;
    return schedule_free(k, p, gn, s, i);
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    const V v = st.ld(1) * c.decay + (c.one_minus_decay * g) * g;
    st.st(1, v);
    V gn = g / (sqrt(v / c.c0) + c.eps);
    if (k.wd != typename V::Scalar(0)) gn = gn + c.wd * p;
    return vschedule_free(k, c, p, gn, st);
  }
};

// schedulefree.SGDScheduleFree; p holds y. w = ckp1,
// c1 = lr (momentum (1 - ckp1) - 1).
template <>
struct Rule<Algo::sf_sgd> {
  static void constants(StepArgs& a) {
    a.w = a.ckp1;
    a.c1 = a.lr * (a.momentum * (1.0 - a.ckp1) - 1.0);
  }
  template <class T, class S>
  static T ref(const StepConsts<T>& k, T p, T g, const S& s, std::size_t i) {
    return schedule_free(k, p, g, s, i);
  }
  template <class V, class S>
  static SLIMGRAD_OPTIM_INLINE V simd(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                      const S& st) {
    return vschedule_free(k, c, p, g, st);
  }
};

}  // inline namespace SLIMGRAD_TARGET_NAMESPACE
}  // namespace slimgrad::kernels
