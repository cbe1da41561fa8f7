// Scalar reference (the oracle) of the bfloat16 GEMM (bf16_gemm.hpp): plain
// loops over every output element, k walked in pairs, the odd element first
// (vdpbf16ps's order), each product added by std::fma (a bfloat16 product is
// exact in float32, so fma and a multiply-then-add agree). No packing, no
// tiling: the order of the sum is the whole contract. Compiled with
// -ffp-contract=off.
#include <cmath>
#include <cstring>

#include "slimgrad/bf16_gemm.hpp"
#include "slimgrad/simd.hpp"

namespace slimgrad::kernels {
namespace {

float widen(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace

template <>
void bf16_axpby<Isa::scalar>(std::uint16_t* out, const float* acc, const std::uint16_t* x, std::size_t n, float alpha,
                             float beta) {
  for (std::size_t i = 0; i < n; ++i) {
    float v = beta * acc[i];
    if (x) v = alpha * widen(x[i]) + v;
    out[i] = simd::float_to_bf16(v);
  }
}

template <>
void bf16_gemm<Isa::scalar>(const Bf16Gemm& g, Bf16Dot /*dot*/) {
  // A symmetric operand is read from its lower triangle only.
  const auto aat = [&](std::size_t i, std::size_t kk) {
    return widen(g.sym_a && kk > i ? g.a[kk * g.lda + i] : g.a[i * g.lda + kk]);
  };
  const auto bat = [&](std::size_t j, std::size_t kk) {
    if (g.sym_b && kk > j) return widen(g.b[kk * g.ldb + j]);
    return widen(g.trans_b ? g.b[j * g.ldb + kk] : g.b[kk * g.ldb + j]);
  };
  for (std::size_t i = 0; i < g.m; ++i) {
    const std::size_t jend = g.lower ? i + 1 : g.n;
    for (std::size_t j = 0; j < jend; ++j) {
      float acc = 0.0f;
      for (std::size_t kk = 0; kk < g.k; kk += 2) {
        const bool odd = kk + 1 < g.k;
        acc = std::fma(odd ? aat(i, kk + 1) : 0.0f, odd ? bat(j, kk + 1) : 0.0f, acc);
        acc = std::fma(aat(i, kk), bat(j, kk), acc);
      }
      g.c[i * g.ldc + j] = acc;
    }
    if (g.out)
      bf16_axpby<Isa::scalar>(g.out + i * g.ldo, g.c + i * g.ldc, g.x ? g.x + i * g.ldx : nullptr, jend, g.alpha,
                              g.beta);
  }
}

}  // namespace slimgrad::kernels
