// The SIMD update of the ASGD, Rprop and Schedule-Free (AdamW, SGD) rows of
// the elementwise optimizer family, included by kernels_optim_simd.hpp
// (update() calls update_adaptive after maximize and the common weight decay).
//  - Same operations in the same order as their cases in
//    kernels_optim_scalar.cpp (the reference), no FMA (the optim area is
//    "exact"): every ISA gives the scalar reference's bits.
//  - Comparisons and selects only (no branches on data): Rprop's factor,
//    clamp and sign, and the averaging switch of ASGD is a uniform flag.
//  - Tails, half precision and bfloat16 state come with the caller (run()).
#pragma once

#include "slimgrad/optim.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels::optim_simd {

inline constexpr bool is_adaptive(Algo a) {
  return a == Algo::asgd || a == Algo::rprop || a == Algo::sf_adamw || a == Algo::sf_sgd;
}

// The new p of one vector position for an adaptive row; g has had maximize
// and (except sf_adamw) the coupled weight decay applied.
template <Algo A, class V, class S>
SLIMGRAD_OPTIM_INLINE V update_adaptive(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                                        const S& st) {
  using T = typename V::Scalar;
  if constexpr (A == Algo::asgd) {
    p = p * c.c0;
    p = p + c.c1 * g;
    st.st(0, k.flag ? st.ld(0) + (p - st.ld(0)) * c.c2 : p);
    return p;
  } else if constexpr (A == Algo::rprop) {
    const V zero = V::zero(), one = V::set1(T(1));
    const V prod = g * st.ld(0);
    const V f = select(lt(zero, prod), c.c1, select(lt(prod, zero), c.c0, one));
    V ss = st.ld(1) * f;
    ss = select(lt(ss, c.c2), c.c2, ss);
    const V hi = V::set1(k.c3);
    ss = select(lt(hi, ss), hi, ss);
    const V gm = select(lt(prod, zero), zero, g);
    const V sign = select(lt(zero, gm), one, select(lt(gm, zero), V::set1(T(-1)), zero));
    st.st(0, gm);
    st.st(1, ss);
    return p - sign * ss;
  } else {
    const auto lerp = [&](V self, V end) {
      return k.w < T(0.5) ? self + c.w * (end - self) : end - (end - self) * c.w_rest;
    };
    if constexpr (A == Algo::sf_adamw) {
      const V v = st.ld(1) * c.decay + (c.one_minus_decay * g) * g;
      st.st(1, v);
      V gn = g / (sqrt(v / c.c0) + c.eps);
      if (k.wd != T(0)) gn = gn + c.wd * p;  // weight decay at y
      const V z = st.ld(0);
      p = lerp(p, z);
      st.st(0, z - c.lr * gn);
      return p + c.c1 * gn;
    } else {
      static_assert(A == Algo::sf_sgd, "update_adaptive(): not an adaptive row");
      const V z = st.ld(0);
      p = lerp(p, z);
      st.st(0, z - c.lr * g);
      return p + c.c1 * g;
    }
  }
}

}  // namespace slimgrad::kernels::optim_simd
