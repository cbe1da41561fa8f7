// Entry points of bf16_gemm.hpp: the ISA dispatch of the bfloat16 GEMM and
// Muon's bfloat16 Newton-Schulz iteration on top of it (three products per
// iteration, two of them symmetric, with their torch epilogues).
//
// The epilogues (round the float32 sums to bfloat16, b*A + c*AA, a*S + BS)
// run inside the products, on each finished tile (Bf16Gemm::out), with
// bf16_axpby's operations (no contraction: "exact" area): their bits do not
// depend on the ISA or the thread count. The symmetric A and B are stored as
// their lower triangles only and read so (Bf16Gemm::sym_a / sym_b).
#include "slimgrad/bf16_gemm.hpp"

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "slimgrad/simd.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad {

void bf16_gemm(const Bf16Gemm& g) {
  if (g.lower && g.m != g.n) throw std::invalid_argument("bf16_gemm: lower needs a square product");
  if ((g.sym_a && (g.m != g.k || g.lda != g.k)) || (g.sym_b && (g.n != g.k || g.ldb != g.k || !g.trans_b)))
    throw std::invalid_argument("bf16_gemm: a symmetric operand must be square (k x k, ld k, b transposed)");
  const Bf16Dot dot = isa_active_at_least(Isa::amx)           ? Bf16Dot::amx
                      : isa_active_at_least(Isa::avx512_bf16) ? Bf16Dot::vdpbf16ps
                                                              : Bf16Dot::fma;
  dispatch([&](auto isa) { kernels::bf16_gemm<decltype(isa)::value>(g, dot); });
}

namespace {

using bf16 = std::uint16_t;

// dst (cols x rows) = src (rows x cols) transposed, 32 x 32 blocks.
template <class T>
void transpose(const T* src, std::size_t rows, std::size_t cols, T* dst) {
  constexpr std::size_t B = 32;
  for (std::size_t i0 = 0; i0 < rows; i0 += B)
    for (std::size_t j0 = 0; j0 < cols; j0 += B)
      for (std::size_t i = i0; i < std::min(rows, i0 + B); ++i)
        for (std::size_t j = j0; j < std::min(cols, j0 + B); ++j) dst[j * rows + i] = src[i * cols + j];
}

// One matrix (m x n float32, values already bfloat16), `threads` per product.
void ns_one(float* x, std::size_t rows, std::size_t cols, float a, float b, float c, int steps, int threads) {
  const bool tall = rows > cols;
  const std::size_t m = tall ? cols : rows, n = tall ? rows : cols;  // S is m x n, m <= n
  if (m == 0 || steps <= 0) return;
  std::unique_ptr<bf16[]> s(new bf16[m * n]), t(new bf16[m * n]), gram(new bf16[m * m]()), upd(new bf16[m * m]());  // upper triangles never read
  std::unique_ptr<float[]> acc(new float[m * n]);
  const std::size_t work_size = std::max(bf16_gemm_work_size(m, m, n), bf16_gemm_work_size(m, n, m));
  const std::unique_ptr<std::uint32_t, void (*)(void*)> work(
      static_cast<std::uint32_t*>(std::aligned_alloc(64, (work_size * 4 + 63) / 64 * 64)), std::free);
  if (!work) throw std::bad_alloc();
  if (tall) transpose(x, rows, cols, acc.get());
  dispatch([&](auto isa) {  // exact: the values are bfloat16 already
    kernels::bf16_axpby<decltype(isa)::value>(s.get(), tall ? acc.get() : x, nullptr, m * n, 0.0f, 1.0f);
  });
  // out = bf16(alpha x + beta (A B)), fused into the product's tiles.
  // A and B with sym: symmetric, only their lower triangle is read.
  const auto gemm = [&](const bf16* A, const bf16* B, bool trans_b, std::size_t cols_out, std::size_t k,
                        bool lower, bool sym, bf16* out, const bf16* xin, float alpha, float beta) {
    Bf16Gemm g{A, k, B, trans_b ? k : cols_out, trans_b, acc.get(), cols_out, m, cols_out, k, lower, threads};
    g.out = out, g.ldo = cols_out, g.x = xin, g.ldx = cols_out, g.alpha = alpha, g.beta = beta;
    g.sym_a = sym, g.sym_b = sym && trans_b;
    g.work = work.get();
    bf16_gemm(g);
  };
  for (int step = 0; step < steps; ++step) {
    // A = bf16(S S^T): its lower triangle (the upper one is never read).
    gemm(s.get(), s.get(), true, m, n, true, false, gram.get(), nullptr, 0.0f, 1.0f);
    // B = bf16(b A + c A A), A A = A A^T (A symmetric): the lower triangle.
    gemm(gram.get(), gram.get(), true, m, m, true, true, upd.get(), gram.get(), b, c);
    // S = bf16(a S + B S), B read from its lower triangle.
    gemm(upd.get(), s.get(), false, n, m, false, true, t.get(), s.get(), a, 1.0f);
    std::swap(s, t);
  }
  for (std::size_t i = 0; i < m * n; ++i) acc[i] = simd::bf16_to_float(s[i]);
  if (tall)
    transpose(acc.get(), m, n, x);
  else
    std::copy(acc.get(), acc.get() + m * n, x);
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
