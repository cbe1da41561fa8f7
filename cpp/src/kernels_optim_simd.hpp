// Optimizer steps written once against simd.hpp, instantiated by
// kernels_optim_avx2.cpp and kernels_optim_avx512.cpp.
//  - One pass: each vector of p, g and the states is loaded once, updated,
//    stored once. The algorithm and the storage type are template
//    parameters; option flags are uniform branches (predicted, hoisted).
//  - Same operations in the same order as the scalar oracle
//    (kernels_optim_scalar.cpp), and fp-contract=off below so the compiler
//    does not fuse a*b+c into an FMA: every ISA gives the same bits as the
//    scalar reference. The step is memory bound; FMA would not make it faster.
//  - Tails: the last k < width elements go through padded copies
//    (load_partial / store_partial), i.e. the same arithmetic as the body.
//  - float16/bfloat16: widened to float32 (F16C / shifts), math on the float32
//    master, rounded back in the same pass: round-to-nearest-even vector
//    stores, or stochastic rounding per lane through the scalar functions of
//    optim.hpp (the same bits as the oracle by construction).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "slimgrad/optim.hpp"
#include "slimgrad/simd.hpp"

// After the includes: applies to the kernels below (and the simd.hpp inlines
// once inlined into them), not to the intrinsic headers.
#pragma GCC optimize("fp-contract=off")

namespace slimgrad::kernels {
using namespace slimgrad::simd;

namespace optim_simd {

template <class V>
struct VConsts {
  using T = typename V::Scalar;
  V lr, neg_lr, wd, eps, momentum, one_minus_dampening, decay, one_minus_decay, w, w_rest, c0, c1,
      c2, neg_c0, wd_scale;
  explicit VConsts(const StepConsts<T>& k)
      : lr(V::set1(k.lr)),
        neg_lr(V::set1(k.neg_lr)),
        wd(V::set1(k.wd)),
        eps(V::set1(k.eps)),
        momentum(V::set1(k.momentum)),
        one_minus_dampening(V::set1(k.one_minus_dampening)),
        decay(V::set1(k.decay)),
        one_minus_decay(V::set1(k.one_minus_decay)),
        w(V::set1(k.w)),
        w_rest(V::set1(k.w_rest)),
        c0(V::set1(k.c0)),
        c1(V::set1(k.c1)),
        c2(V::set1(k.c2)),
        neg_c0(V::set1(-k.c0)),
        wd_scale(V::set1(k.wd_scale)) {}
};

// Loads/stores of one vector position: full vectors or a padded tail.
template <class V, bool Full>
struct Access {
  using T = typename V::Scalar;
  std::size_t k;  // lanes in use (tail only)
  V ld(const T* p) const {
    if constexpr (Full) return V::load(p);
    else return load_partial<V>(p, k);
  }
  void st(T* p, V x) const {
    if constexpr (Full) x.store(p);
    else store_partial(p, k, x);
  }
};

template <class V>
inline V vmax(V a, V b) {  // a < b ? b : a, as the oracle
  return select(lt(a, b), b, a);
}

template <Algo A, class V, class Acc>
inline V update(const StepConsts<typename V::Scalar>& k, const VConsts<V>& c, V p, V g,
                typename V::Scalar* s0, typename V::Scalar* s1, typename V::Scalar* s2,
                const Acc& io) {
  using T = typename V::Scalar;
  const auto lerp = [&](V self, V end) {
    return k.w < T(0.5) ? self + c.w * (end - self) : end - (end - self) * c.w_rest;
  };
  if (k.maximize) g = g * V::set1(T(-1));  // exact negation, -0 included
  if (k.has_wd) {
    if (k.decoupled)
      p = p * c.wd_scale;
    else
      g = g + c.wd * p;
  }
  if constexpr (A == Algo::sgd) {
    if (k.has_momentum) {
      const V buf = k.flag ? g : io.ld(s0) * c.momentum + c.one_minus_dampening * g;
      io.st(s0, buf);
      g = k.nesterov ? g + c.momentum * buf : buf;
    }
    return p + c.neg_lr * g;
  } else if constexpr (A == Algo::adagrad) {
    const V sum = io.ld(s0) + g * g;
    io.st(s0, sum);
    return p + (c.neg_c0 * g) / (sqrt(sum) + c.eps);
  } else if constexpr (A == Algo::rmsprop) {
    const V sq = io.ld(s0) * c.decay + (c.one_minus_decay * g) * g;
    io.st(s0, sq);
    V avg;
    if (k.centered) {
      const V ga = lerp(io.ld(s2), g);
      io.st(s2, ga);
      avg = sqrt(sq - ga * ga) + c.eps;
    } else {
      avg = sqrt(sq) + c.eps;
    }
    if (k.has_momentum) {
      const V buf = io.ld(s1) * c.momentum + g / avg;
      io.st(s1, buf);
      return p + c.neg_lr * buf;
    }
    return p + (c.neg_lr * g) / avg;
  } else if constexpr (A == Algo::adadelta) {
    const V sq = io.ld(s0) * c.decay + (c.one_minus_decay * g) * g;
    io.st(s0, sq);
    const V acc = io.ld(s1);
    const V delta = (sqrt(acc + c.eps) / sqrt(sq + c.eps)) * g;
    io.st(s1, acc * c.decay + (c.one_minus_decay * delta) * delta);
    return p + c.neg_lr * delta;
  } else if constexpr (A == Algo::adam) {
    const V m = lerp(io.ld(s0), g);
    const V v = io.ld(s1) * c.decay + (c.one_minus_decay * g) * g;
    io.st(s0, m);
    io.st(s1, v);
    V vh = v;
    if (k.amsgrad) {
      vh = vmax(io.ld(s2), v);
      io.st(s2, vh);
    }
    return p + (c.neg_c0 * m) / (sqrt(vh) / c.c1 + c.eps);
  } else if constexpr (A == Algo::adamax) {
    const V m = lerp(io.ld(s0), g);
    const V u = vmax(io.ld(s1) * c.decay, abs(g) + c.eps);
    io.st(s0, m);
    io.st(s1, u);
    return p + (c.neg_c0 * m) / u;
  } else if constexpr (A == Algo::nadam) {
    const V m = lerp(io.ld(s0), g);
    const V v = io.ld(s1) * c.decay + (c.one_minus_decay * g) * g;
    io.st(s0, m);
    io.st(s1, v);
    const V den = sqrt(v / c.c0) + c.eps;
    p = p + (c.c1 * g) / den;
    return p + (c.c2 * m) / den;
  } else {  // radam
    const V m = lerp(io.ld(s0), g);
    const V v = io.ld(s1) * c.decay + (c.one_minus_decay * g) * g;
    io.st(s0, m);
    io.st(s1, v);
    const V bm = m / c.c0;
    if (k.flag) return p - ((bm * c.lr) * (c.c1 / (sqrt(v) + c.eps))) * c.c2;
    return p - bm * c.lr;
  }
}

#if defined(__AVX2__)
// Stochastic rounding of 8 floats, the vector form of bf16_stochastic /
// f16_stochastic (optim.hpp), bit for bit. In an anonymous namespace: this
// header is compiled once per ISA file, and internal linkage keeps the AVX2
// copy and the AVX-512-flagged copy apart (the per-file-flags ODR trap).
namespace {

inline __m256i fmix32_v(__m256i x) {
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x85EBCA6Bu)));
  x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 13));
  x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0xC2B2AE35u)));
  return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

// sr_bits(key, index0 + j) for j < 8; the low 32 bits of the index must not wrap.
inline __m256i sr_bits8(std::uint64_t key, std::uint64_t index0) {
  const __m256i lo = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(index0))),
                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  const __m256i a = fmix32_v(_mm256_add_epi32(_mm256_mullo_epi32(lo, _mm256_set1_epi32(static_cast<int>(0x9E3779B1u))),
                                              _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(key)))));
  const std::uint32_t h =
      static_cast<std::uint32_t>(key >> 32) ^ (static_cast<std::uint32_t>(index0 >> 32) * 0x85EBCA77u);
  return fmix32_v(_mm256_xor_si256(a, _mm256_set1_epi32(static_cast<int>(h))));
}

inline __m128i pack16(__m256i v) {  // 8 lanes < 65536 -> 8 uint16
  return _mm256_castsi256_si128(_mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08));
}

inline void sr_round8(const float* xs, std::uint16_t* out, std::uint64_t key, std::uint64_t index0, bool bf16) {
  const __m256i r = sr_bits8(key, index0);
  const __m256 x = _mm256_loadu_ps(xs);
  const __m256 finite = _mm256_cmp_ps(_mm256_sub_ps(x, x), _mm256_setzero_ps(), _CMP_EQ_OQ);
  __m256i res;
  if (bf16) {
    const __m256i sr = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_castps_si256(x), _mm256_and_si256(r, _mm256_set1_epi32(0xFFFF))), 16);
    res = _mm256_blendv_epi8(simd::bf16_round_bits(simd::F8{x}), sr, _mm256_castps_si256(finite));
  } else {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m128i down = _mm256_cvtps_ph(x, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256i d32 = _mm256_cvtepu16_epi32(down);
    const __m256i u32 = _mm256_add_epi32(d32, _mm256_set1_epi32(1));
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 fd = _mm256_andnot_ps(sign, _mm256_cvtph_ps(down));
    const __m256 fu = _mm256_andnot_ps(sign, _mm256_cvtph_ps(pack16(u32)));
    const __m256 frac = _mm256_div_ps(_mm256_sub_ps(ax, fd), _mm256_sub_ps(fu, fd));
    const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(r, 8)), _mm256_set1_ps(5.9604644775390625e-8f));
    const __m256 up = _mm256_and_ps(_mm256_cmp_ps(u, frac, _CMP_LT_OQ), _mm256_cmp_ps(fd, ax, _CMP_NEQ_OQ));
    const __m256i sr = _mm256_blendv_epi8(d32, u32, _mm256_castps_si256(up));
    const __m256i near = _mm256_cvtepu16_epi32(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const __m256 special = _mm256_or_ps(_mm256_cmp_ps(ax, _mm256_set1_ps(65504.0f), _CMP_GT_OQ),
                                        _mm256_xor_ps(finite, _mm256_castsi256_ps(_mm256_set1_epi32(-1))));
    res = _mm256_blendv_epi8(sr, near, _mm256_castps_si256(special));
  }
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), pack16(res));
}

}  // namespace
#endif  // __AVX2__

template <Isa I>
inline Vec<float, I> load_half(const std::uint16_t* p, bool bf16) {
  return bf16 ? load_bf16<I>(p) : load_f16<I>(p);
}

template <Isa I, Algo A, class T>
void run(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  using V = Vec<T, I>;
  constexpr std::size_t W = V::width;
  const StepConsts<T> k(a);
  const VConsts<V> c(k);
  T* s0 = static_cast<T*>(s.s[0]);
  T* s1 = static_cast<T*>(s.s[1]);
  T* s2 = static_cast<T*>(s.s[2]);
  const auto off = [](T* q, std::size_t i) { return q ? q + i : q; };

  if constexpr (std::is_same_v<T, double>) {
    double* p = static_cast<double*>(s.p);
    const double* g = static_cast<const double*>(s.g);
    const auto body = [&](std::size_t i, auto io) {
      io.st(p + i, update<A>(k, c, io.ld(p + i), io.ld(g + i), off(s0, i), off(s1, i), off(s2, i), io));
    };
    std::size_t i = b;
    for (; i + W <= e; i += W) body(i, Access<V, true>{W});
    if (i < e) body(i, Access<V, false>{e - i});
  } else if (a.storage == Storage::f32) {
    float* p = static_cast<float*>(s.p);
    const float* g = static_cast<const float*>(s.g);
    const auto body = [&](std::size_t i, auto io) {
      io.st(p + i, update<A>(k, c, io.ld(p + i), io.ld(g + i), off(s0, i), off(s1, i), off(s2, i), io));
    };
    std::size_t i = b;
    for (; i + W <= e; i += W) body(i, Access<V, true>{W});
    if (i < e) body(i, Access<V, false>{e - i});
  } else {
    auto* p = static_cast<std::uint16_t*>(s.p);
    const auto* g = static_cast<const std::uint16_t*>(s.g);
    float* master = s.master;
    const bool bf16 = a.storage == Storage::bf16;
    const std::uint64_t key = sr_key(a.seed, a.step);
    const auto body = [&](std::size_t i, std::size_t n, auto io) {
      V gv;
      if (n == W) {
        gv = load_half<I>(g + i, bf16);
      } else {
        std::uint16_t tmp[W] = {};
        std::memcpy(tmp, g + i, n * sizeof(std::uint16_t));
        gv = load_half<I>(tmp, bf16);
      }
      const V x = update<A>(k, c, io.ld(master + i), gv, off(s0, i), off(s1, i), off(s2, i), io);
      io.st(master + i, x);
      std::uint16_t out[W];
      if (a.stochastic) {
        float xs[W];
        x.store(xs);
        for (std::size_t j = 0; j < n; j += 8) {
          const std::uint64_t idx = s.offset + i + j;
#if defined(__AVX2__)
          if (static_cast<std::uint32_t>(idx) <= 0xFFFFFFF8u) {  // no wrap of the low 32 bits
            sr_round8(xs + j, out + j, key, idx, bf16);
            continue;
          }
#endif
          for (std::size_t q = j; q < j + 8 && q < W; ++q) {
            const std::uint32_t r = sr_bits(key, s.offset + i + q);
            out[q] = bf16 ? bf16_stochastic(xs[q], r) : f16_stochastic(xs[q], r);
          }
        }
      } else if (bf16) {
        store_bf16(out, x);
      } else {
        store_f16(out, x);
      }
      std::memcpy(p + i, out, n * sizeof(std::uint16_t));
    };
    std::size_t i = b;
    for (; i + W <= e; i += W) body(i, W, Access<V, true>{W});
    if (i < e) body(i, e - i, Access<V, false>{e - i});
  }
}

template <Isa I, class T>
void run_algo(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  switch (a.algo) {
    case Algo::sgd: return run<I, Algo::sgd, T>(a, s, b, e);
    case Algo::adagrad: return run<I, Algo::adagrad, T>(a, s, b, e);
    case Algo::rmsprop: return run<I, Algo::rmsprop, T>(a, s, b, e);
    case Algo::adadelta: return run<I, Algo::adadelta, T>(a, s, b, e);
    case Algo::adam: return run<I, Algo::adam, T>(a, s, b, e);
    case Algo::adamax: return run<I, Algo::adamax, T>(a, s, b, e);
    case Algo::nadam: return run<I, Algo::nadam, T>(a, s, b, e);
    case Algo::radam: return run<I, Algo::radam, T>(a, s, b, e);
  }
}

}  // namespace optim_simd

template <Isa I>
void optim_step(const StepArgs& a, const Slot& s, std::size_t b, std::size_t e) {
  if (a.storage == Storage::f64)
    optim_simd::run_algo<I, double>(a, s, b, e);
  else
    optim_simd::run_algo<I, float>(a, s, b, e);
}

}  // namespace slimgrad::kernels
