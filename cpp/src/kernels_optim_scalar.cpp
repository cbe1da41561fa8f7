// Scalar reference of the elementwise optimizer steps: plain loops, one
// element at a time, compiled once with the baseline flags and
// -ffp-contract=off (CMakeLists.txt). The per-algorithm code is each row's
// Rule<A>::ref (kernels_optim_rules.hpp), written in torch's order of
// operations; this unit adds what every row shares: the clip, maximize and
// weight decay prologue, storage (float64, float32, float16/bfloat16 with or
// without a float32 master, rounded nearest even or stochastically) and
// bfloat16 state (States: widened on load, rounded on store). This is the
// oracle the SIMD kernels (kernels_optim_simd.hpp) must match bit for bit.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels_optim_rules.hpp"
#include "slimgrad/optim.hpp"

namespace slimgrad::kernels {
namespace {

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

template <Algo A, class T>
void run(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  const StepConsts<T> k(a);
  States<T> st{{s.s[0], s.s[1], s.s[2]}};
  st.bf16 = a.bf16_state;
  st.stochastic = a.stochastic;
  st.offset = s.offset;
  for (int j = 0; j < 2; ++j) st.key[j] = state_sr_key(a.seed, a.step, j);
  // The new value of p[i] (states at i updated in place).
  const auto up = [&k, &st](T p, T g, std::size_t i) {
    g = prepare(p, g, k);
    return Rule<A>::ref(k, p, g, st, i);
  };
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
void optim_step<Isa::scalar>(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  // Multipass rows never reach optim_step (the binding refuses them).
  dispatch_rule(a.algo, [&](auto row) {
    if (a.storage == Storage::f64)
      run<decltype(row)::value, double>(a, s, b, e);
    else
      run<decltype(row)::value, float>(a, s, b, e);
  });
}

}  // namespace slimgrad::kernels
