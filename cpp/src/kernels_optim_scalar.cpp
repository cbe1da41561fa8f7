// Scalar reference of the optimizer steps: plain loops, one element at a
// time, compiled with -ffp-contract=off. This is the oracle the SIMD kernels
// must match bit for bit: every formula below is written in torch's order of
// operations (addcmul: self + (value * t1) * t2; addcdiv: self + (value * t1)
// / t2; lerp: self + w (end - self) for w < 0.5, else end - (end - self)(1 - w)),
// and the SIMD code repeats the same operations in the same order. State
// arrays may be bfloat16 (States: widened on load, rounded on store).
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "slimgrad/optim.hpp"

namespace slimgrad::kernels {
namespace {

template <class T>
inline T lerp(T self, T end, const StepConsts<T>& k) {
  return k.w < T(0.5) ? self + k.w * (end - self) : end - (end - self) * k.w_rest;
}

// Gradient after maximize and (coupled) weight decay; decoupled decay scales p.
template <class T>
inline T prepare(T& p, T g, const StepConsts<T>& k) {
  if (k.maximize) g = -g;
  if (k.has_wd) {
    if (k.decoupled)
      p = p * k.wd_scale;
    else
      g = g + k.wd * p;
  }
  return g;
}

// The state arrays of one call: T, or bfloat16 rounded on store (nearest
// even, or stochastic keyed by slot, step and element index).
template <class T>
struct States {
  void* s[3];
  bool bf16 = false, stochastic = false;
  std::uint64_t key[2] = {0, 0};  // state_sr_key(seed, step, slot / 2)
  std::uint64_t offset = 0;

  T ld(int k, std::size_t i) const {
    if constexpr (std::is_same_v<T, float>)
      if (bf16) return simd::bf16_to_float(static_cast<const std::uint16_t*>(s[k])[i]);
    return static_cast<const T*>(s[k])[i];
  }
  void st(int k, std::size_t i, T x) const {
    if constexpr (std::is_same_v<T, float>) {
      if (bf16) {
        static_cast<std::uint16_t*>(s[k])[i] =
            stochastic ? bf16_stochastic(x, sr_bits(key[k / 2], offset + i) >> (16 * (k % 2)))
                       : simd::float_to_bf16(x);
        return;
      }
    }
    static_cast<T*>(s[k])[i] = x;
  }
};

template <class T>
struct Updater {
  const StepConsts<T>& k;
  Algo algo;
  const States<T>& s;

  // The new value of p[i] (states at i updated in place).
  T operator()(T p, T g, std::size_t i) const {
    switch (algo) {
      case Algo::sgd: {
        g = prepare(p, g, k);
        if (k.has_momentum) {
          const T buf = k.flag ? g : s.ld(0, i) * k.momentum + k.one_minus_dampening * g;
          s.st(0, i, buf);
          g = k.nesterov ? g + k.momentum * buf : buf;
        }
        return p + k.neg_lr * g;
      }
      case Algo::adagrad: {
        g = prepare(p, g, k);
        const T sum = s.ld(0, i) + g * g;
        s.st(0, i, sum);
        return p + (-k.c0 * g) / (std::sqrt(sum) + k.eps);
      }
      case Algo::rmsprop: {
        g = prepare(p, g, k);
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
      case Algo::adadelta: {
        g = prepare(p, g, k);
        const T sq = s.ld(0, i) * k.decay + (k.one_minus_decay * g) * g;
        s.st(0, i, sq);
        const T std_ = std::sqrt(sq + k.eps);
        const T delta = (std::sqrt(s.ld(1, i) + k.eps) / std_) * g;
        s.st(1, i, s.ld(1, i) * k.decay + (k.one_minus_decay * delta) * delta);
        return p + k.neg_lr * delta;
      }
      case Algo::adam: {
        g = prepare(p, g, k);
        const T m = lerp(s.ld(0, i), g, k);
        const T v = s.ld(1, i) * k.decay + (k.one_minus_decay * g) * g;
        s.st(0, i, m);
        s.st(1, i, v);
        T vh = v;
        if (k.amsgrad) {
          vh = s.ld(2, i) < v ? v : s.ld(2, i);
          s.st(2, i, vh);
        }
        const T den = std::sqrt(vh) / k.c1 + k.eps;
        return p + (-k.c0 * m) / den;
      }
      case Algo::adamax: {
        g = prepare(p, g, k);
        const T m = lerp(s.ld(0, i), g, k);
        const T a = s.ld(1, i) * k.decay;
        const T b = std::fabs(g) + k.eps;
        const T u = a < b ? b : a;
        s.st(0, i, m);
        s.st(1, i, u);
        return p + (-k.c0 * m) / u;
      }
      case Algo::nadam: {
        g = prepare(p, g, k);
        const T m = lerp(s.ld(0, i), g, k);
        const T v = s.ld(1, i) * k.decay + (k.one_minus_decay * g) * g;
        s.st(0, i, m);
        s.st(1, i, v);
        const T den = std::sqrt(v / k.c0) + k.eps;
        p = p + (k.c1 * g) / den;
        return p + (k.c2 * m) / den;
      }
      case Algo::radam: {
        g = prepare(p, g, k);
        const T m = lerp(s.ld(0, i), g, k);
        const T v = s.ld(1, i) * k.decay + (k.one_minus_decay * g) * g;
        s.st(0, i, m);
        s.st(1, i, v);
        const T bm = m / k.c0;
        if (k.flag) return p - ((bm * k.lr) * (k.c1 / (std::sqrt(v) + k.eps))) * k.c2;
        return p - bm * k.lr;
      }
      case Algo::lion: {  // Chen et al. 2023; sign(0) = sign(NaN) = 0
        g = prepare(p, g, k);
        const T m = s.ld(0, i);
        const T u = k.beta1 * m + k.w * g;
        s.st(0, i, k.decay * m + k.one_minus_decay * g);
        const T sign = static_cast<T>((T(0) < u) - (u < T(0)));
        return p + k.neg_lr * sign;
      }
      case Algo::asgd: {  // torch.optim.ASGD: decay, step, then the average ax
        g = prepare(p, g, k);
        p = p * k.c0;
        p = p + k.c1 * g;
        s.st(0, i, k.flag ? s.ld(0, i) + (p - s.ld(0, i)) * k.c2 : p);
        return p;
      }
      case Algo::rprop: {  // torch.optim.Rprop; a sign change zeroes the gradient
        g = prepare(p, g, k);
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
      case Algo::sf_adamw: {  // schedulefree.AdamWScheduleFree; p holds y
        if (k.maximize) g = -g;
        const T v = s.ld(1, i) * k.decay + (k.one_minus_decay * g) * g;
        s.st(1, i, v);
        T gn = g / (std::sqrt(v / k.c0) + k.eps);
        if (k.wd != T(0)) gn = gn + k.wd * p;  // weight decay at y
        const T z = s.ld(0, i);
        p = lerp(p, z, k);
        s.st(0, i, z - k.lr * gn);
        return p + k.c1 * gn;
      }
      case Algo::sf_sgd: {  // schedulefree.SGDScheduleFree; p holds y
        g = prepare(p, g, k);
        const T z = s.ld(0, i);
        p = lerp(p, z, k);
        s.st(0, i, z - k.lr * g);
        return p + k.c1 * g;
      }
      default:  // multipass rows never reach optim_step (the binding refuses them)
        break;
    }
    return p;
  }
};

template <class T>
void run(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  const StepConsts<T> k(a);
  States<T> st{{s.s[0], s.s[1], s.s[2]}};
  st.bf16 = a.bf16_state;
  st.stochastic = a.stochastic;
  st.offset = s.offset;
  for (int j = 0; j < 2; ++j) st.key[j] = state_sr_key(a.seed, a.step, j);
  const Updater<T> up{k, a.algo, st};
  // A fused clip: the gradient times grad_scale, as clip_grad_norm_ leaves it.
  const auto clip = [&k](T x) { return k.has_gscale ? x * k.gscale : x; };
  if constexpr (std::is_same_v<T, double>) {
    double* p = static_cast<double*>(s.p);
    const double* g = static_cast<const double*>(s.g);
    for (std::size_t i = b; i < e; ++i) p[i] = up(p[i], clip(g[i]), i);
  } else if (a.storage == Storage::f32) {
    float* p = static_cast<float*>(s.p);
    const float* g = static_cast<const float*>(s.g);
    for (std::size_t i = b; i < e; ++i) p[i] = up(p[i], clip(g[i]), i);
  } else {
    auto* p = static_cast<std::uint16_t*>(s.p);
    const auto* g = static_cast<const std::uint16_t*>(s.g);
    const bool bf16 = a.storage == Storage::bf16;
    const std::uint64_t key = sr_key(a.seed, a.step);
    const auto widen = [bf16](std::uint16_t h) { return bf16 ? simd::bf16_to_float(h) : simd::half_to_float(h); };
    for (std::size_t i = b; i < e; ++i) {
      // Without a master copy the param itself is the float32 starting point.
      const float x = up(s.master ? s.master[i] : widen(p[i]), clip(widen(g[i])), i);
      if (s.master) s.master[i] = x;
      if (a.stochastic) {
        const std::uint32_t r = sr_bits(key, s.offset + i);
        p[i] = bf16 ? bf16_stochastic(x, r) : f16_stochastic(x, r);
      } else {
        p[i] = bf16 ? simd::float_to_bf16(x) : simd::float_to_half(x);
      }
    }
  }
}

}  // namespace

template <>
std::size_t find_nonfinite_half<Isa::scalar>(const std::uint16_t* x, std::size_t n, bool bf16) {
  const std::uint16_t mask = bf16 ? 0x7F80 : 0x7C00;  // exponent all ones: inf or NaN
  for (std::size_t i = 0; i < n; ++i)
    if ((x[i] & mask) == mask) return i;
  return n;
}

template <>
void widen_half<Isa::scalar>(const std::uint16_t* x, float* out, std::size_t n, bool bf16) {
  for (std::size_t i = 0; i < n; ++i) out[i] = bf16 ? simd::bf16_to_float(x[i]) : simd::half_to_float(x[i]);
}

template <>
void optim_step<Isa::scalar>(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  if (a.storage == Storage::f64)
    run<double>(a, s, b, e);
  else
    run<float>(a, s, b, e);
}

}  // namespace slimgrad::kernels
