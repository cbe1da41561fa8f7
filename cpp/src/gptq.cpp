// GPTQ and SparseGPT (see gptq.hpp). Dense linear algebra through Eigen: the
// Cholesky factorizations of H and H^-1 and the lazy-batch updates
// W[:, rest] -= Err * Hinv[block, rest] (a GEMM per block of columns).
//
// Layout: each chunk of rows is copied once into a column-major float64
// matrix in processing order, so column i (one weight per row) is
// contiguous and the block update is one Eigen product. The per-element
// quantization step is the scalar quantizer itself (kernels::quant_codes,
// kernels_quant_scalar.cpp): with a diagonal H no error moves, and the codes
// equal quant::quantize's round-to-nearest codes bit for bit.
//
// Baseline compile flags only (this file is not an ISA file): Eigen uses SSE2
// here, enough for layers of a few thousand columns (GPTQ is O(rows * cols^2)).
#define EIGEN_DONT_PARALLELIZE  // rows are split on slimgrad's own pool instead
#include "slimgrad/gptq.hpp"

#include <Eigen/Cholesky>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "slimgrad/quant.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad::gptq {
namespace {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
using RowMajorMap = Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>;

// Rows per work item: fixed, so results never depend on the thread count.
constexpr std::size_t kRowChunk = 32;

// The processing order and the upper Cholesky factor U of the damped H^-1
// (H^-1 = U^T U) in that order: U[i, i] is the OBS denominator of column i
// and U[i, i+1:] the direction its error is spread along.
struct Prepared {
  std::vector<std::size_t> order;  // position -> original column
  std::vector<char> dead;          // by original column
  Mat hinv;
};

Prepared prepare(const double* h, std::size_t cols, bool act_order, double damp) {
  Prepared p;
  Mat H = RowMajorMap(h, static_cast<Eigen::Index>(cols), static_cast<Eigen::Index>(cols));
  p.dead.assign(cols, 0);
  for (std::size_t j = 0; j < cols; ++j) {
    const auto jj = static_cast<Eigen::Index>(j);
    if (H(jj, jj) == 0.0) {
      p.dead[j] = 1;
      H(jj, jj) = 1.0;
    }
  }
  p.order.resize(cols);
  std::iota(p.order.begin(), p.order.end(), std::size_t{0});
  if (act_order)
    std::stable_sort(p.order.begin(), p.order.end(), [&](std::size_t a, std::size_t b) {
      return H(static_cast<Eigen::Index>(a), static_cast<Eigen::Index>(a)) >
             H(static_cast<Eigen::Index>(b), static_cast<Eigen::Index>(b));
    });
  const auto n = static_cast<Eigen::Index>(cols);
  Mat hp(n, n);
  for (Eigen::Index b = 0; b < n; ++b)
    for (Eigen::Index a = 0; a < n; ++a)
      hp(a, b) = H(static_cast<Eigen::Index>(p.order[a]), static_cast<Eigen::Index>(p.order[b]));
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
  p.hinv = linv.reverse();
  return p;
}

// Rows [r0, r0 + R) of w, dead columns zeroed, columns in processing order.
Mat load_rows(const float* w, std::size_t cols, std::size_t r0, std::size_t R, const Prepared& p) {
  Mat m(static_cast<Eigen::Index>(R), static_cast<Eigen::Index>(cols));
  for (std::size_t a = 0; a < cols; ++a) {
    const std::size_t c = p.order[a];
    for (std::size_t r = 0; r < R; ++r)
      m(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(a)) = p.dead[c] ? 0.0 : w[(r0 + r) * cols + c];
  }
  return m;
}

// After column i of a block [i1, i2) got its error e (one per row): spread it
// onto the rest of the block now; the columns after the block get the whole
// block's errors in one product once the block is done (the lazy batch).
void spread_in_block(Mat& wc, const Mat& err, const Mat& hinv, std::size_t i, std::size_t i1, std::size_t i2) {
  const auto ii = static_cast<Eigen::Index>(i), rest = static_cast<Eigen::Index>(i2 - i - 1);
  if (rest > 0)
    wc.middleCols(ii + 1, rest).noalias() -= err.col(ii - static_cast<Eigen::Index>(i1)) * hinv.block(ii, ii + 1, 1, rest);
}
void spread_after_block(Mat& wc, const Mat& err, const Mat& hinv, std::size_t i1, std::size_t i2, std::size_t cols) {
  const auto b = static_cast<Eigen::Index>(i2 - i1), rest = static_cast<Eigen::Index>(cols - i2);
  if (rest > 0)
    wc.rightCols(rest).noalias() -= err.leftCols(b) * hinv.block(static_cast<Eigen::Index>(i1),
                                                                 static_cast<Eigen::Index>(i2), b, rest);
}

// The current value of the column at position a >= i, for every row, while
// column i of the block [i1, i2) is being processed: columns inside the block
// already carry the errors of i1..i-1, later ones still owe them.
Eigen::VectorXd current_column(const Mat& wc, const Mat& err, const Mat& hinv, std::size_t a, std::size_t i,
                               std::size_t i1, std::size_t i2) {
  Eigen::VectorXd v = wc.col(static_cast<Eigen::Index>(a));
  if (a >= i2 && i > i1) {
    const auto k = static_cast<Eigen::Index>(i - i1);
    v.noalias() -= err.leftCols(k) * hinv.col(static_cast<Eigen::Index>(a)).segment(static_cast<Eigen::Index>(i1), k);
  }
  return v;
}

}  // namespace

double quantize(const float* w, std::size_t rows, std::size_t cols, const double* h, const QuantOptions& opt,
                std::uint8_t* codes, float* scale, std::int32_t* zero_point) {
  if (rows == 0 || cols == 0) return 0.0;
  const Prepared p = prepare(h, cols, opt.act_order, opt.damp);
  const std::size_t gs = opt.group_size == 0 ? cols : opt.group_size;
  const std::size_t n_groups = (cols + gs - 1) / gs;
  const std::size_t B = opt.block_size;
  const int qmax_i = opt.symmetric ? (1 << (opt.bits - 1)) - 1 : (1 << opt.bits) - 1;
  const float qmax = static_cast<float>(qmax_i), qmin = opt.symmetric ? -qmax : 0.0f;
  std::vector<std::size_t> pos(cols);
  for (std::size_t a = 0; a < cols; ++a) pos[p.order[a]] = a;

  return parallel_sum(rows, kRowChunk, [&](std::size_t r0, std::size_t r1) {
    const std::size_t R = r1 - r0;
    Mat wc = load_rows(w, cols, r0, R, p);
    Mat err(static_cast<Eigen::Index>(R), static_cast<Eigen::Index>(B));
    std::vector<quant::Param> params(R * n_groups);
    std::vector<char> have(n_groups, 0);
    std::vector<float> lo(R), hi(R);
    double loss = 0.0;
    for (std::size_t i1 = 0; i1 < cols; i1 += B) {
      const std::size_t i2 = std::min(cols, i1 + B);
      for (std::size_t i = i1; i < i2; ++i) {
        const std::size_t g = p.order[i] / gs;
        if (!have[g]) {  // the group's parameters, from its current weights
          have[g] = 1;
          const std::size_t c1 = std::min(cols, (g + 1) * gs);
          for (std::size_t c = g * gs; c < c1; ++c) {
            const Eigen::VectorXd v = current_column(wc, err, p.hinv, pos[c], i, i1, i2);
            for (std::size_t r = 0; r < R; ++r) {
              const float f = static_cast<float>(v[static_cast<Eigen::Index>(r)]);
              lo[r] = c == g * gs || f < lo[r] ? f : lo[r];
              hi[r] = c == g * gs || hi[r] < f ? f : hi[r];
            }
          }
          for (std::size_t r = 0; r < R; ++r) {
            const quant::Param q = quant::make_param(lo[r], hi[r], lo[r] == hi[r], qmax_i, opt.symmetric);
            params[r * n_groups + g] = q;
            scale[(r0 + r) * n_groups + g] = q.scale;
            zero_point[(r0 + r) * n_groups + g] = static_cast<std::int32_t>(q.zp);
          }
        }
        const auto ii = static_cast<Eigen::Index>(i);
        const double d = p.hinv(ii, ii);
        for (std::size_t r = 0; r < R; ++r) {
          const quant::Param& q = params[r * n_groups + g];
          const double x = wc(static_cast<Eigen::Index>(r), ii);
          const float xf = static_cast<float>(x);
          std::uint8_t& code = codes[(r0 + r) * cols + p.order[i]];
          kernels::quant_codes<Isa::scalar>(&xf, 1, q.scale, q.inv, q.use_div, q.zp, qmin, qmax,
                                            static_cast<int>(quant::Rounding::half_even), 0, 0, &code);
          const float t = opt.symmetric ? static_cast<float>(static_cast<std::int8_t>(code)) : code;
          const double e = (x - static_cast<double>(q.scale * (t - q.zp))) / d;
          loss += e * e;
          err(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(i - i1)) = e;
        }
        spread_in_block(wc, err, p.hinv, i, i1, i2);
      }
      spread_after_block(wc, err, p.hinv, i1, i2, cols);
    }
    return loss / 2.0;
  });
}

namespace {
// Prunes the k entries of cand (positions in the chunk's column order) with
// the smallest score, ties to the lower original column; clears keep for them.
void prune_smallest(std::vector<std::size_t>& cand, std::size_t k, const std::vector<double>& score,
                    const std::vector<std::size_t>& order, std::uint8_t* keep_row) {
  if (k == 0) return;
  std::partial_sort(cand.begin(), cand.begin() + static_cast<std::ptrdiff_t>(k), cand.end(),
                    [&](std::size_t a, std::size_t b) {
                      return score[a] < score[b] || (score[a] == score[b] && order[a] < order[b]);
                    });
  for (std::size_t t = 0; t < k; ++t) keep_row[order[cand[t]]] = 0;
}
}  // namespace

double prune(const float* w, std::size_t rows, std::size_t cols, const double* h, const PruneOptions& opt,
             float* out, std::uint8_t* keep) {
  if (rows == 0 || cols == 0) return 0.0;
  const Prepared p = prepare(h, cols, false, opt.damp);
  const std::size_t B = opt.block_size;
  const bool nm = opt.m > 0;

  return parallel_sum(rows, kRowChunk, [&](std::size_t r0, std::size_t r1) {
    const std::size_t R = r1 - r0;
    Mat wc = load_rows(w, cols, r0, R, p);
    Mat err(static_cast<Eigen::Index>(R), static_cast<Eigen::Index>(B));
    std::fill(keep + r0 * cols, keep + r1 * cols, std::uint8_t{1});
    std::vector<double> score(cols);
    std::vector<std::size_t> cand;
    double loss = 0.0;
    auto choose = [&](std::size_t a0, std::size_t a1, std::size_t k) {  // positions [a0, a1), every row
      for (std::size_t r = 0; r < R; ++r) {
        cand.clear();
        for (std::size_t a = a0; a < a1; ++a) {
          const auto aa = static_cast<Eigen::Index>(a);
          const double x = wc(static_cast<Eigen::Index>(r), aa), d = p.hinv(aa, aa);
          score[a] = x * x / (d * d);
          cand.push_back(a);
        }
        prune_smallest(cand, k, score, p.order, keep + (r0 + r) * cols);
      }
    };
    for (std::size_t i1 = 0; i1 < cols; i1 += B) {
      const std::size_t i2 = std::min(cols, i1 + B);
      if (!nm) choose(i1, i2, static_cast<std::size_t>(std::nearbyint(opt.sparsity * static_cast<double>(i2 - i1))));
      for (std::size_t i = i1; i < i2; ++i) {
        if (nm && (i - i1) % opt.m == 0) choose(i, i + opt.m, opt.m - opt.n);
        const auto ii = static_cast<Eigen::Index>(i);
        const double d = p.hinv(ii, ii);
        for (std::size_t r = 0; r < R; ++r) {
          const double x = wc(static_cast<Eigen::Index>(r), ii);
          const std::size_t at = (r0 + r) * cols + p.order[i];
          const double q = keep[at] ? x : 0.0;
          out[at] = static_cast<float>(q);
          const double e = (x - q) / d;
          loss += e * e;
          err(static_cast<Eigen::Index>(r), static_cast<Eigen::Index>(i - i1)) = e;
        }
        spread_in_block(wc, err, p.hinv, i, i1, i2);
      }
      spread_after_block(wc, err, p.hinv, i1, i2, cols);
    }
    return loss / 2.0;
  });
}

}  // namespace slimgrad::gptq
