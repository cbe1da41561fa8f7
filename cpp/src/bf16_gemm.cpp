// Entry points of bf16_gemm.hpp: the ISA dispatch of the bfloat16 GEMM and
// Muon's bfloat16 Newton-Schulz iteration on top of it (three products per
// iteration, two of them symmetric, with their torch epilogues).
//
// The epilogues (round the float32 sums to bfloat16, b*A + c*AA, a*S + BS)
// are elementwise passes over C here, in the baseline unit (no FMA, so no
// contraction): their bits do not depend on the ISA or the thread count.
#include "slimgrad/bf16_gemm.hpp"

#include <algorithm>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "slimgrad/simd.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad {

void bf16_gemm(const Bf16Gemm& g) {
  if (g.lower && g.m != g.n) throw std::invalid_argument("bf16_gemm: lower needs a square product");
  const bool dp = active_isa() == Isa::avx512_bf16;
  dispatch([&](auto isa) { kernels::bf16_gemm<decltype(isa)::value>(g, dp); });
}

namespace {

using bf16 = std::uint16_t;

// out = bf16(alpha x + beta acc) on the lower triangle of m x m matrices
// (row i: columns 0..i), then mirrored into the upper one (32 x 32 blocks).
void lower_epilogue(bf16* out, const float* acc, const bf16* x, std::size_t m, float alpha, float beta) {
  dispatch([&](auto isa) {
    for (std::size_t i = 0; i < m; ++i)
      kernels::bf16_axpby<decltype(isa)::value>(out + i * m, acc + i * m, x ? x + i * m : nullptr, i + 1, alpha,
                                                beta);
  });
  constexpr std::size_t B = 32;
  for (std::size_t i0 = 0; i0 < m; i0 += B)
    for (std::size_t j0 = 0; j0 <= i0; j0 += B)
      for (std::size_t i = i0; i < std::min(m, i0 + B); ++i)
        for (std::size_t j = j0; j < std::min(i, j0 + B); ++j) out[j * m + i] = out[i * m + j];
}

// One matrix (m x n float32, values already bfloat16), `threads` per product.
void ns_one(float* x, std::size_t rows, std::size_t cols, float a, float b, float c, int steps, int threads) {
  const bool tall = rows > cols;
  const std::size_t m = tall ? cols : rows, n = tall ? rows : cols;  // S is m x n, m <= n
  if (m == 0 || steps <= 0) return;
  std::unique_ptr<bf16[]> s(new bf16[m * n]), t(new bf16[m * n]), gram(new bf16[m * m]), upd(new bf16[m * m]);
  std::unique_ptr<float[]> acc(new float[m * n]);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j)
      s[tall ? j * n + i : i * n + j] = simd::float_to_bf16(x[i * cols + j]);
  const auto gemm = [&](const bf16* A, std::size_t lda, const bf16* B, std::size_t ldb, bool trans_b,
                        std::size_t cols_out, std::size_t k, bool lower) {
    bf16_gemm(Bf16Gemm{A, lda, B, ldb, trans_b, acc.get(), cols_out, m, cols_out, k, lower, threads});
  };
  for (int step = 0; step < steps; ++step) {
    // A = bf16(S S^T): the lower triangle, mirrored.
    gemm(s.get(), n, s.get(), n, true, m, n, true);
    lower_epilogue(gram.get(), acc.get(), nullptr, m, 0.0f, 1.0f);
    // B = bf16(b A + c A A), A A = A A^T (A symmetric).
    gemm(gram.get(), m, gram.get(), m, true, m, m, true);
    lower_epilogue(upd.get(), acc.get(), gram.get(), m, b, c);
    // S = bf16(a S + B S).
    gemm(upd.get(), m, s.get(), n, false, n, m, false);
    dispatch([&](auto isa) { kernels::bf16_axpby<decltype(isa)::value>(t.get(), acc.get(), s.get(), m * n, a, 1.0f); });
    std::swap(s, t);
  }
  const auto fl = [](bf16 h) { return simd::bf16_to_float(h); };
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t j = 0; j < cols; ++j) x[i * cols + j] = fl(s[tall ? j * n + i : i * n + j]);
}

}  // namespace

void muon_ns_bf16(float* const* x, const std::size_t* rows, const std::size_t* cols, std::size_t count, float a,
                  float b, float c, int steps) {
  const int threads = get_num_threads();
  if (count >= static_cast<std::size_t>(threads) && threads > 1) {
    // One task per matrix, the costliest first (dynamic schedule).
    std::vector<std::size_t> order(count);
    std::iota(order.begin(), order.end(), std::size_t{0});
    const auto cost = [&](std::size_t t) {
      const std::size_t m = std::min(rows[t], cols[t]), n = std::max(rows[t], cols[t]);
      return m * m * (3 * n + m);
    };
    std::stable_sort(order.begin(), order.end(), [&](std::size_t p, std::size_t q) { return cost(p) > cost(q); });
    parallel_tasks(count, [&](std::size_t i) {
      const std::size_t t = order[i];
      ns_one(x[t], rows[t], cols[t], a, b, c, steps, 1);
    });
    return;
  }
  for (std::size_t t = 0; t < count; ++t) ns_one(x[t], rows[t], cols[t], a, b, c, steps, threads);
}

}  // namespace slimgrad
