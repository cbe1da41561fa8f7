// GPTQ and SparseGPT (see gptq.hpp).
//
// inverse_factor: the processing order and U through Eigen (float64): one
// Cholesky of the order-reversed H and a blocked triangular inverse.
//
// The column loop: each chunk of rows is copied once into a column-major
// float64 matrix in processing order, so column i (one weight per row) is
// contiguous. Errors are kept negated (ne = -e), so every update is
// W[:, j] = fma(ne_k, U[k, j], W[:, j]): within a sub-block of kSub columns
// right after each column (rank 1), after the sub-block in one product for
// the rest of its block of B columns, after the block in one product for the
// columns that follow it (the lazy batch); all through kernels::gemm_acc,
// which chains the k in order. A weight therefore sees the same FMA chain
// over all columns before it whatever the block size, ISA or thread count.
// The per-element quantization step is the scalar quantizer itself
// (kernels::quant_codes, kernels_quant_scalar.cpp): with a diagonal H no error
// moves, and the codes equal quant::quantize's round-to-nearest codes bit for
// bit.
//
// Baseline compile flags only (this file is not an ISA file): Eigen uses
// SSE2 here. The fast paths are the per-ISA gemm_acc for the loop and, from
// Python, NumPy's BLAS for the factor (docs/compress.md, "Speed").
#define EIGEN_DONT_PARALLELIZE  // rows are split on slimgrad's own pool instead
#include "slimgrad/gptq.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "slimgrad/quant.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad::gptq {
namespace {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
using RowMajorMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows per work item (rows are independent: any chunking gives the same result).
constexpr std::size_t kRowChunk = 32;

void gemm(double* c, std::size_t ldc, const double* a, std::size_t lda, const double* b, std::size_t ldb,
          std::size_t rows, std::size_t n, std::size_t kc) {
  if (rows == 0 || n == 0 || kc == 0) return;
  dispatch([&](auto isa) { kernels::gemm_acc<decltype(isa)::value>(c, ldc, a, lda, b, ldb, rows, n, kc); });
}

// U[i1:i2, i2:] of every block [i1, i2), packed for the lazy-batch product
// (as GotoBLAS packs B): panels of kPanel columns, each k x kPanel
// contiguous (the last panel zero-padded). Read by every chunk of rows; the
// rows of U itself are cols doubles apart, which costs a TLB miss per k.
constexpr std::size_t kPanel = 12;
struct PackedU {
  std::vector<double> data;
  std::vector<std::size_t> offset;  // by block
  PackedU(const FactorRef& f, std::size_t cols, std::size_t B) {
    std::size_t total = 0;
    for (std::size_t i1 = 0; i1 < cols; i1 += B) {
      offset.push_back(total);
      const std::size_t i2 = std::min(cols, i1 + B), panels = (cols - i2 + kPanel - 1) / kPanel;
      total += panels * kPanel * (i2 - i1);
    }
    data.assign(total, 0.0);
    parallel_for(offset.size(), 1, [&](std::size_t b0, std::size_t b1) {
      for (std::size_t b = b0; b < b1; ++b) {
        const std::size_t i1 = b * B, i2 = std::min(cols, i1 + B), kc = i2 - i1;
        for (std::size_t j0 = i2; j0 < cols; j0 += kPanel) {
          double* panel = data.data() + offset[b] + (j0 - i2) * kc;
          const std::size_t w = std::min(kPanel, cols - j0);
          for (std::size_t k = 0; k < kc; ++k)
            std::copy(f.u + (i1 + k) * cols + j0, f.u + (i1 + k) * cols + j0 + w, panel + k * kPanel);
        }
      }
    });
  }
};

// Columns per sub-block inside a lazy batch: errors spread by rank-1 updates
// only within a sub-block, and onto the rest of the batch in one product per
// sub-block (a two-level lazy batch: rank-1 updates load and store C for one
// FMA each, so fewer of them is faster; the FMA chains stay the same).
constexpr std::size_t kSub = 16;

// One chunk of rows [r0, r0 + R) in processing order, and the shared factor.
struct Chunk {
  const FactorRef& f;
  const PackedU& pu;
  std::size_t cols, R, B, S;  // S: sub-block size (kSub, or a multiple of m for N:M pruning)
  std::vector<double> wc, ne;  // R x cols and R x B, column-major

  Chunk(const float* w, const FactorRef& f_, const PackedU& pu_, std::size_t cols_, std::size_t r0, std::size_t R_,
        std::size_t B_, std::size_t S_ = kSub)
      : f(f_), pu(pu_), cols(cols_), R(R_), B(B_), S(S_), wc(R_ * cols_), ne(R_ * B_) {
    for (std::size_t a = 0; a < cols; ++a) {
      const auto c = static_cast<std::size_t>(f.order[a]);
      for (std::size_t r = 0; r < R; ++r) wc[a * R + r] = f.dead[c] ? 0.0 : w[(r0 + r) * cols + c];
    }
  }
  double* col(std::size_t a) { return wc.data() + a * R; }
  const double* u(std::size_t i, std::size_t j) const { return f.u + i * cols + j; }
  // The end of the sub-block of block [i1, i2) that holds position i.
  std::size_t sub_end(std::size_t i, std::size_t i1, std::size_t i2) const {
    return std::min(i2, i1 + ((i - i1) / S + 1) * S);
  }
  // After column i of the block [i1, i2) stored its negated error: spread it
  // onto the rest of its sub-block [j1, j2) now, and when the sub-block is
  // done, all its errors onto the rest of the block in one product. Column
  // j sees the errors of the columns before it in order either way.
  void spread_in_block(std::size_t i, std::size_t i1, std::size_t i2) {
    const std::size_t j2 = sub_end(i, i1, i2);
    gemm(col(i + 1), R, ne.data() + (i - i1) * R, R, u(i, i + 1), cols, R, j2 - i - 1, 1);
    if (i + 1 == j2 && j2 < i2) {
      const std::size_t j1 = j2 - 1 - (i - i1) % S;
      gemm(col(j2), R, ne.data() + (j1 - i1) * R, R, u(j1, j2), cols, R, i2 - j2, j2 - j1);
    }
  }
  // The columns after the block get the whole block's errors in one product.
  // Column a >= i2 of block [i1, i2)'s packed panels (rows k at stride kPanel).
  const double* packed(std::size_t i1, std::size_t i2, std::size_t a) const {
    return pu.data.data() + pu.offset[i1 / B] + (a - i2) / kPanel * kPanel * (i2 - i1) + (a - i2) % kPanel;
  }
  void spread_after_block(std::size_t i1, std::size_t i2) {
    for (std::size_t j = i2; j < cols; j += kPanel)
      gemm(col(j), R, ne.data(), R, packed(i1, i2, j), kPanel, R, std::min(kPanel, cols - j), i2 - i1);
  }
  // The current value of the column at position a >= i, for every row, while
  // column i of the block [i1, i2) is processed: columns inside i's
  // sub-block [j1, j2) already carry the errors of i1..i-1, later ones in
  // the block those of i1..j1-1, and columns after the block none of i1..i-1.
  void current_column(std::size_t a, std::size_t i, std::size_t i1, std::size_t i2, std::vector<double>& v) {
    std::copy(col(a), col(a) + R, v.begin());
    const std::size_t j1 = i - (i - i1) % S, j2 = sub_end(i, i1, i2);
    if (a >= i2)
      gemm(v.data(), R, ne.data(), R, packed(i1, i2, a), kPanel, R, 1, i - i1);
    else if (a >= j2)
      gemm(v.data(), R, ne.data() + (j1 - i1) * R, R, u(j1, a), cols, R, 1, i - j1);
  }
};

}  // namespace

Factor inverse_factor(const double* h, std::size_t cols, bool act_order, double damp) {
  Factor p;
  const auto n = static_cast<Eigen::Index>(cols);
  RowMajorMat H = Eigen::Map<const RowMajorMat>(h, n, n);
  p.dead.assign(cols, 0);
  for (Eigen::Index j = 0; j < n; ++j)
    if (H(j, j) == 0.0) {
      p.dead[static_cast<std::size_t>(j)] = 1;
      H(j, j) = 1.0;
    }
  p.order.resize(cols);
  std::iota(p.order.begin(), p.order.end(), std::int64_t{0});
  if (act_order)
    std::stable_sort(p.order.begin(), p.order.end(), [&](std::int64_t a, std::int64_t b) { return H(a, a) > H(b, b); });
  Mat hp(n, n);
  for (Eigen::Index b = 0; b < n; ++b)
    for (Eigen::Index a = 0; a < n; ++a) hp(a, b) = H(p.order[a], p.order[b]);
  hp.diagonal().array() += damp * hp.diagonal().mean();
  // U without forming H^-1: with J the order reversal and L L^T = J H J,
  // H^-1 = J L^-T L^-1 J = U^T U for U = J L^-1 J (upper triangular). One
  // Cholesky and one triangular inverse instead of Cholesky, inverse, Cholesky.
  Eigen::LLT<Mat> chol(hp.reverse());
  if (chol.info() != Eigen::Success)
    throw std::domain_error("H: not positive definite after damping (damp=" + std::to_string(damp) +
                            "); raise damp or calibrate on more (or more varied) data");
  // L^-1 by blocks of columns: column block [j, j + kb) of L^-1 is zero
  // above row j, so each block solves only the trailing triangle (n^3 / 3
  // flops instead of n^3 for a solve against the whole identity).
  const Mat& L = chol.matrixLLT();
  Mat linv = Mat::Zero(n, n);
  constexpr Eigen::Index kb = 128;
  for (Eigen::Index j = 0; j < n; j += kb) {
    const Eigen::Index w = std::min(kb, n - j);
    auto x = linv.block(j, j, n - j, w);
    x.topRows(w).setIdentity();
    L.bottomRightCorner(n - j, n - j).triangularView<Eigen::Lower>().solveInPlace(x);
  }
  p.u.resize(cols * cols);
  Eigen::Map<RowMajorMat>(p.u.data(), n, n) = linv.reverse();
  return p;
}

void permute_symmetric(const double* h, std::size_t n, const std::int64_t* order, double* out) {
  // Row a of out gathers from row order[a] of h, first copied in order (the
  // gather's random reads would each wait for memory; a sequential copy is
  // prefetched: 5.2 -> 3.5 ms of CPU for n = 1536). Rows are independent.
  parallel_for(n, 64, [&](std::size_t a0, std::size_t a1) {
    std::vector<double> row(n);
    for (std::size_t a = a0; a < a1; ++a) {
      const double* src = h + static_cast<std::size_t>(order[a]) * n;
      std::copy(src, src + n, row.begin());
      double* dst = out + a * n;
      for (std::size_t b = 0; b < n; ++b) dst[b] = row[static_cast<std::size_t>(order[b])];
    }
  });
}

bool is_symmetric(const double* h, std::size_t n, double rtol, double atol_scale) {
  double amax = 0.0;
  for (std::size_t i = 0; i < n * n; ++i) amax = std::max(amax, std::abs(h[i]));  // NaN: not taken
  const double atol = atol_scale * amax;
  // By square blocks; the block below the diagonal is first copied transposed
  // (contiguous reads), so the comparison runs on contiguous rows.
  constexpr std::size_t kb = 64;
  std::vector<double> t(kb * kb);
  for (std::size_t i0 = 0; i0 < n; i0 += kb)
    for (std::size_t j0 = i0; j0 < n; j0 += kb) {
      const std::size_t bi = std::min(kb, n - i0), bj = std::min(kb, n - j0);
      for (std::size_t j = 0; j < bj; ++j)
        for (std::size_t i = 0; i < bi; ++i) t[i * kb + j] = h[(j0 + j) * n + i0 + i];
      bool ok = true;
      for (std::size_t i = 0; i < bi; ++i) {
        const double* a = h + (i0 + i) * n + j0;
        const double* b = t.data() + i * kb;
        // np.allclose's elementwise test at both (i, j) and (j, i); false for NaN
        for (std::size_t j = 0; j < bj; ++j)
          ok &= std::abs(a[j] - b[j]) <= atol + rtol * std::min(std::abs(a[j]), std::abs(b[j]));
      }
      if (!ok) return false;
    }
  return true;
}

double quantize(const float* w, std::size_t rows, std::size_t cols, const double* h, const QuantOptions& opt,
                std::uint8_t* codes, float* scale, std::int32_t* zero_point) {
  if (rows == 0 || cols == 0) return 0.0;
  const Factor f = inverse_factor(h, cols, opt.act_order, opt.damp);
  return quantize(w, rows, cols, f.ref(), opt, codes, scale, zero_point);
}

double quantize(const float* w, std::size_t rows, std::size_t cols, const FactorRef& f, const QuantOptions& opt,
                std::uint8_t* codes, float* scale, std::int32_t* zero_point) {
  if (rows == 0 || cols == 0) return 0.0;
  const std::size_t gs = opt.group_size == 0 ? cols : opt.group_size;
  const std::size_t n_groups = (cols + gs - 1) / gs;
  const std::size_t B = opt.block_size;
  const int qmax_i = opt.symmetric ? (1 << (opt.bits - 1)) - 1 : (1 << opt.bits) - 1;
  const float qmax = static_cast<float>(qmax_i), qmin = opt.symmetric ? -qmax : 0.0f;
  std::vector<std::size_t> pos(cols);
  for (std::size_t a = 0; a < cols; ++a) pos[static_cast<std::size_t>(f.order[a])] = a;
  const PackedU pu(f, cols, B);

  const int rounding = static_cast<int>(quant::Rounding::half_even);
  return parallel_sum(rows, kRowChunk, [&](std::size_t r0, std::size_t r1) {
    const std::size_t R = r1 - r0;
    Chunk ch(w, f, pu, cols, r0, R, B);
    // Group parameters group-major (g * R + r), as the per-row kernels read them.
    std::vector<float> g_scale(R * n_groups), g_inv(R * n_groups), g_zp(R * n_groups);
    std::vector<char> have(n_groups, 0), g_div(n_groups, 0);
    std::vector<float> lo(R), hi(R), xf(R), deq(R);
    std::vector<std::uint8_t> code(R);
    std::vector<double> v(R);
    double loss = 0.0;
    for (std::size_t i1 = 0; i1 < cols; i1 += B) {
      const std::size_t i2 = std::min(cols, i1 + B);
      for (std::size_t i = i1; i < i2; ++i) {
        const auto oc = static_cast<std::size_t>(f.order[i]);
        const std::size_t g = oc / gs;
        float* const sc = g_scale.data() + g * R;
        float* const inv = g_inv.data() + g * R;
        float* const zp = g_zp.data() + g * R;
        if (!have[g]) {  // the group's parameters, from its current weights
          have[g] = 1;
          const std::size_t c1 = std::min(cols, (g + 1) * gs);
          for (std::size_t c = g * gs; c < c1; ++c) {
            ch.current_column(pos[c], i, i1, i2, v);
            for (std::size_t r = 0; r < R; ++r) {
              const float x = static_cast<float>(v[r]);
              lo[r] = c == g * gs || x < lo[r] ? x : lo[r];
              hi[r] = c == g * gs || hi[r] < x ? x : hi[r];
            }
          }
          for (std::size_t r = 0; r < R; ++r) {
            const quant::Param q = quant::make_param(lo[r], hi[r], lo[r] == hi[r], qmax_i, opt.symmetric);
            sc[r] = q.scale;
            inv[r] = q.inv;
            zp[r] = q.zp;
            g_div[g] |= q.use_div;
            scale[(r0 + r) * n_groups + g] = q.scale;
            zero_point[(r0 + r) * n_groups + g] = static_cast<std::int32_t>(q.zp);
          }
        }
        // Codes and their values: the quantizer's per-row kernels (bit for bit
        // its scalar reference on every ISA); a group with a subnormal scale
        // (divides instead of multiplying) goes through the scalar one.
        const double* x = ch.col(i);
        for (std::size_t r = 0; r < R; ++r) xf[r] = static_cast<float>(x[r]);
        if (!g_div[g]) {
          dispatch([&](auto isa) {
            constexpr Isa I = decltype(isa)::value;
            kernels::quant_codes_cols<I>(xf.data(), R, inv, zp, qmin, qmax, rounding, 0, 0, code.data());
            kernels::quant_dequant_cols<I>(code.data(), opt.symmetric, R, sc, zp, deq.data());
          });
        } else {
          for (std::size_t r = 0; r < R; ++r) {
            const bool div = sc[r] < std::numeric_limits<float>::min();  // as quant::make_param decides
            kernels::quant_codes<Isa::scalar>(&xf[r], 1, sc[r], inv[r], div, zp[r], qmin, qmax, rounding, 0, 0,
                                              &code[r]);
            kernels::quant_dequant<Isa::scalar>(&code[r], opt.symmetric, 1, sc[r], zp[r], &deq[r]);
          }
        }
        const double d = *ch.u(i, i);
        double* ne = ch.ne.data() + (i - i1) * R;
        for (std::size_t r = 0; r < R; ++r) {
          codes[(r0 + r) * cols + oc] = code[r];
          const double e = (x[r] - static_cast<double>(deq[r])) / d;
          loss += e * e;
          ne[r] = -e;
        }
        ch.spread_in_block(i, i1, i2);
      }
      ch.spread_after_block(i1, i2);
    }
    return loss / 2.0;
  });
}

namespace {
// Prunes the k entries of cand (positions in the chunk's column order) with
// the smallest score, ties to the lower original column; clears keep for them.
void prune_smallest(std::vector<std::size_t>& cand, std::size_t k, const std::vector<double>& score,
                    const std::int64_t* order, std::uint8_t* keep_row) {
  if (k == 0) return;
  // (score, column) is a strict total order: the k smallest are one set, which
  // selection finds in linear time (a partial sort would also order them).
  if (k < cand.size())
    std::nth_element(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(k - 1), cand.end(),
                     [&](std::size_t a, std::size_t b) {
                       return score[a] < score[b] || (score[a] == score[b] && order[a] < order[b]);
                     });
  for (std::size_t t = 0; t < k; ++t) keep_row[order[cand[t]]] = 0;
}
}  // namespace

double prune(const float* w, std::size_t rows, std::size_t cols, const double* h, const PruneOptions& opt,
             float* out, std::uint8_t* keep) {
  if (rows == 0 || cols == 0) return 0.0;
  const Factor f = inverse_factor(h, cols, false, opt.damp);
  return prune(w, rows, cols, f.ref(), opt, out, keep);
}

double prune(const float* w, std::size_t rows, std::size_t cols, const FactorRef& f, const PruneOptions& opt,
             float* out, std::uint8_t* keep) {
  if (rows == 0 || cols == 0) return 0.0;
  const std::size_t B = opt.block_size;
  const bool nm = opt.m > 0;
  const PackedU pu(f, cols, B);

  return parallel_sum(rows, kRowChunk, [&](std::size_t r0, std::size_t r1) {
    const std::size_t R = r1 - r0;
    // N:M groups start at multiples of m in a block: keep them inside one sub-block
    Chunk ch(w, f, pu, cols, r0, R, B, nm ? opt.m * std::max<std::size_t>(1, kSub / opt.m) : kSub);
    std::fill(keep + r0 * cols, keep + r1 * cols, std::uint8_t{1});
    std::vector<double> score(cols);
    std::vector<std::size_t> cand;
    double loss = 0.0;
    auto choose = [&](std::size_t a0, std::size_t a1, std::size_t k) {  // positions [a0, a1), every row
      for (std::size_t r = 0; r < R; ++r) {
        cand.clear();
        for (std::size_t a = a0; a < a1; ++a) {
          const double x = ch.col(a)[r], d = *ch.u(a, a);
          score[a] = x * x / (d * d);
          cand.push_back(a);
        }
        prune_smallest(cand, k, score, f.order, keep + (r0 + r) * cols);
      }
    };
    for (std::size_t i1 = 0; i1 < cols; i1 += B) {
      const std::size_t i2 = std::min(cols, i1 + B);
      if (!nm) choose(i1, i2, static_cast<std::size_t>(std::nearbyint(opt.sparsity * static_cast<double>(i2 - i1))));
      for (std::size_t i = i1; i < i2; ++i) {
        if (nm && (i - i1) % opt.m == 0) choose(i, i + opt.m, opt.m - opt.n);
        const double d = *ch.u(i, i);
        const double* x = ch.col(i);
        double* ne = ch.ne.data() + (i - i1) * R;
        for (std::size_t r = 0; r < R; ++r) {
          const std::size_t at = (r0 + r) * cols + static_cast<std::size_t>(f.order[i]);
          const double q = keep[at] ? x[r] : 0.0;
          out[at] = static_cast<float>(q);
          const double e = (x[r] - q) / d;
          loss += e * e;
          ne[r] = -e;
        }
        ch.spread_in_block(i, i1, i2);
      }
      ch.spread_after_block(i1, i2);
    }
    return loss / 2.0;
  });
}

}  // namespace slimgrad::gptq
