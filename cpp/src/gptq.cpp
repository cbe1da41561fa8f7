// GPTQ and SparseGPT (see gptq.hpp).
//
// factor: the processing order and S through Eigen (float64): one Cholesky
// of the order-reversed H. No inverse (gptq.hpp: the loop is left-looking).
//
// The column loop: each chunk of rows is copied once into a column-major
// float64 matrix in processing order (wc: W0, each column replaced by
// D = W0 - Q once processed), so column i (one weight per row) is
// contiguous. For a block of B columns [i1, i2), acc[:, a] = sum_{k<i} D_k
// S[k, a]: at the block's start in one product over every earlier column
// (the lazy batch, S packed in panels), then within the block by rank-1
// updates inside sub-blocks of kSub columns and one product per sub-block for
// the rest of the block (a two-level lazy batch). Each element of acc is one
// FMA chain over k in processing order (kernels::gemm_acc), whatever the
// block size, ISA or thread count; column i's weight is then
// fma(acc, 1 / S[i, i], W0). The per-element quantization step is the scalar
// quantizer itself (kernels::quant_codes, kernels_quant_scalar.cpp): with a
// diagonal H, acc stays 0 and the codes equal quant::quantize's
// round-to-nearest codes bit for bit.
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
#include <utility>
#include <vector>

#include "slimgrad/quant.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad::gptq {
namespace {

using Mat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic>;  // column-major
using RowMajorMat = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Rows per work item (rows are independent: any chunking gives the same result).
constexpr std::size_t kRowChunk = 32;
constexpr std::size_t kNone = static_cast<std::size_t>(-1);

void gemm(double* c, std::size_t ldc, const double* a, std::size_t lda, const double* b, std::size_t ldb,
          std::size_t rows, std::size_t n, std::size_t kc) {
  if (rows == 0 || n == 0 || kc == 0) return;
  dispatch([&](auto isa) { kernels::gemm_acc<decltype(isa)::value>(c, ldc, a, lda, b, ldb, rows, n, kc); });
}

// out = inv(T) for the upper triangular T = s[0:k, 0:k] (row stride ld),
// row-major k x k, zeros below the diagonal: row i is
// -(sum_{i<l} T[i, l] out[l, :]) / T[i, i] (back substitution by rows,
// contiguous inner loops), out[i, i] = 1 / T[i, i].
void tri_inverse(const double* s, std::size_t ld, std::size_t k, double* out) {
  std::fill(out, out + k * k, 0.0);
  for (std::size_t i = k; i-- > 0;) {
    double* ui = out + i * k;
    for (std::size_t l = i + 1; l < k; ++l) {
      const double t = s[i * ld + l];
      const double* ul = out + l * k;
      for (std::size_t j = l; j < k; ++j) ui[j] += t * ul[j];
    }
    const double d = s[i * ld + i];
    for (std::size_t j = i + 1; j < k; ++j) ui[j] = -ui[j] / d;
    ui[i] = 1.0 / d;
  }
}

// inv(S[p:q, p:q]) for the ranges [p, q) whose weights the loop needs as of
// their first position p > 0 (a group's, a SparseGPT block's or N:M group's),
// computed once and shared by every chunk of rows. At most one range per p.
struct RangeInverses {
  std::vector<double> data;
  std::vector<std::size_t> at;  // by position p: offset into data, or kNone
  RangeInverses(const double* s, std::size_t cols, const std::vector<std::pair<std::size_t, std::size_t>>& ranges)
      : at(cols, kNone) {
    std::size_t total = 0;
    for (const auto& [p, q] : ranges) {
      at[p] = total;
      total += (q - p) * (q - p);
    }
    data.resize(total);
    parallel_for(ranges.size(), 1, [&](std::size_t r0, std::size_t r1) {
      for (std::size_t r = r0; r < r1; ++r) {
        const auto [p, q] = ranges[r];
        tri_inverse(s + p * cols + p, cols, q - p, data.data() + at[p]);
      }
    });
  }
  const double* get(std::size_t p) const { return data.data() + at[p]; }
};

// S[:i1, i1:i2] of every block [i1, i2), packed for the block-start product
// (as GotoBLAS packs B): panels of kPanel columns, each i1 x kPanel
// contiguous (the last panel zero-padded). Read by every chunk of rows; the
// rows of S itself are cols doubles apart, which costs a TLB miss per k.
constexpr std::size_t kPanel = 12;
struct PackedS {
  std::vector<double> data;
  std::vector<std::size_t> offset;  // by block
  PackedS(const FactorRef& f, std::size_t cols, std::size_t B) {
    std::size_t total = 0;
    for (std::size_t i1 = 0; i1 < cols; i1 += B) {
      offset.push_back(total);
      const std::size_t i2 = std::min(cols, i1 + B), panels = (i2 - i1 + kPanel - 1) / kPanel;
      total += panels * kPanel * i1;
    }
    data.assign(total, 0.0);
    parallel_for(offset.size(), 1, [&](std::size_t b0, std::size_t b1) {
      for (std::size_t b = b0; b < b1; ++b) {
        const std::size_t i1 = b * B, i2 = std::min(cols, i1 + B);
        for (std::size_t j0 = i1; j0 < i2; j0 += kPanel) {
          double* panel = data.data() + offset[b] + (j0 - i1) * i1;
          const std::size_t w = std::min(kPanel, i2 - j0);
          for (std::size_t k = 0; k < i1; ++k)
            std::copy(f.s + k * cols + j0, f.s + k * cols + j0 + w, panel + k * kPanel);
        }
      }
    });
  }
};

// Columns per sub-block inside a lazy batch: sums grow by rank-1 updates
// only within a sub-block, and over the rest of the batch in one product per
// sub-block (rank-1 updates load and store C for one FMA each, so fewer of
// them is faster; the FMA chains stay the same).
constexpr std::size_t kSub = 16;

// One chunk of rows [r0, r0 + R) in processing order, and the shared factor.
struct Chunk {
  const FactorRef& f;
  const PackedS& ps;
  std::size_t cols, R, B, S;  // S: sub-block size (kSub, or a multiple of m for N:M pruning)
  std::vector<double> wc, ne, acc, tmp;  // R x cols, R x cols, R x B, R x B; column-major

  Chunk(const float* w, const FactorRef& f_, const PackedS& ps_, std::size_t cols_, std::size_t r0, std::size_t R_,
        std::size_t B_, std::size_t S_, std::size_t range_max)
      : f(f_), ps(ps_), cols(cols_), R(R_), B(B_), S(S_), wc(R_ * cols_), ne(f_.top_rows ? R_ * cols_ : 0),
        acc(R_ * B_), tmp(R_ * range_max) {
    for (std::size_t a = 0; a < cols; ++a) {
      const auto c = static_cast<std::size_t>(f.order[a]);
      for (std::size_t r = 0; r < R; ++r) wc[a * R + r] = f.dead[c] ? 0.0 : w[(r0 + r) * cols + c];
    }
  }
  double* col(std::size_t a) { return wc.data() + a * R; }
  double* acc_col(std::size_t a, std::size_t i1) { return acc.data() + (a - i1) * R; }
  const double* s(std::size_t i, std::size_t j) const { return f.s + i * cols + j; }
  // The end of the sub-block of block [i1, i2) that holds position i.
  std::size_t sub_end(std::size_t i, std::size_t i1, std::size_t i2) const {
    return std::min(i2, i1 + ((i - i1) / S + 1) * S);
  }
  // acc for the block [i1, i2): the sums over every column before it.
  void start_block(std::size_t i1, std::size_t i2) {
    std::fill(acc.begin(), acc.begin() + static_cast<std::ptrdiff_t>((i2 - i1) * R), 0.0);
    const double* packed = ps.data.data() + ps.offset[i1 / B];
    for (std::size_t j = i1; j < i2; j += kPanel)
      gemm(acc_col(j, i1), R, wc.data(), R, packed + (j - i1) * i1, kPanel, R, std::min(kPanel, i2 - j), i1);
  }
  // After column i of the block [i1, i2) stored D_i in col(i): add it to the
  // rest of its sub-block [j1, j2) now, and when the sub-block is done, all
  // its columns to the rest of the block in one product. Column j's sum
  // takes the columns before it in order either way.
  void spread_in_block(std::size_t i, std::size_t i1, std::size_t i2) {
    const std::size_t j2 = sub_end(i, i1, i2);
    gemm(acc_col(i + 1, i1), R, col(i), R, s(i, i + 1), cols, R, j2 - i - 1, 1);
    if (i + 1 == j2 && j2 < i2) {
      const std::size_t j1 = j2 - 1 - (i - i1) % S;
      gemm(acc_col(j2, i1), R, col(j1), R, s(j1, j2), cols, R, i2 - j2, j2 - j1);
    }
  }
  // sum_{k<i} D_k S[k, a] for position a (i <= a) while column i of the
  // block [i1, i2) is next, into v: columns inside i's sub-block [j1, j2)
  // have it in acc, later ones in the block lack j1..i-1, columns after the
  // block everything (formed here: one product over all earlier columns).
  void sum_before(std::size_t a, std::size_t i, std::size_t i1, std::size_t i2, double* v) {
    if (a >= i2) {
      std::fill(v, v + R, 0.0);
      gemm(v, R, wc.data(), R, s(0, a), cols, R, 1, i);
      return;
    }
    std::copy(acc_col(a, i1), acc_col(a, i1) + R, v);
    const std::size_t j1 = i - (i - i1) % S;
    if (a >= sub_end(i, i1, i2)) gemm(v, R, col(j1), R, s(j1, a), cols, R, 1, i - j1);
  }
  // The weights of positions [p, q) as of position p (the column processed
  // next, in block [i1, i2)), into out (R x (q - p), column-major):
  // W0 + sums @ inv(S[p:q, p:q]), the product by panels of columns so the
  // zero lower triangle of the inverse is mostly skipped. As of position 0
  // they are W0.
  void range_values(std::size_t p, std::size_t q, std::size_t i1, std::size_t i2, const RangeInverses& ri,
                    double* out) {
    const std::size_t k = q - p;
    for (std::size_t l = p; l < q; ++l) std::copy(col(l), col(l) + R, out + (l - p) * R);
    if (p == 0) return;
    for (std::size_t l = p; l < q; ++l) sum_before(l, p, i1, i2, tmp.data() + (l - p) * R);
    const double* t = ri.get(p);
    constexpr std::size_t kW = 24;
    for (std::size_t j = 0; j < k; j += kW) {
      const std::size_t w = std::min(kW, k - j);
      gemm(out + j * R, R, tmp.data(), R, t + j, k, R, w, j + w);
    }
  }
  // The weight of position a >= i as of position i from the top rows of U:
  // W0_a - sum_{k<i} E_k U[k, a] (ne holds -E).
  void top_value(std::size_t a, std::size_t i, double* v) {
    std::copy(col(a), col(a) + R, v);
    if (i > 0) gemm(v, R, ne.data(), R, f.top + a, cols, R, 1, i);
  }
};

std::vector<double> reciprocal_diagonal(const FactorRef& f, std::size_t cols) {
  std::vector<double> rs(cols);
  for (std::size_t i = 0; i < cols; ++i) rs[i] = 1.0 / f.s[i * cols + i];
  return rs;
}

}  // namespace

Factor factor(const double* h, std::size_t cols, bool act_order, double damp) {
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
  // S = J L J with L L^T = J H J (J the order reversal): upper, S S^T = H.
  Eigen::LLT<Mat> chol(hp.reverse());
  if (chol.info() != Eigen::Success)
    throw std::domain_error("H: not positive definite after damping (damp=" + std::to_string(damp) +
                            "); raise damp or calibrate on more (or more varied) data");
  p.s.resize(cols * cols);
  Eigen::Map<RowMajorMat>(p.s.data(), n, n) = Mat(chol.matrixL()).reverse();
  return p;
}

std::size_t top_rows(const std::int64_t* order, std::size_t cols, std::size_t group_size) {
  const std::size_t gs = group_size == 0 ? cols : group_size;
  const std::size_t n_groups = cols == 0 ? 0 : (cols + gs - 1) / gs;
  std::vector<std::size_t> first(n_groups, cols), last(n_groups, 0);
  for (std::size_t a = 0; a < cols; ++a) {
    const std::size_t g = static_cast<std::size_t>(order[a]) / gs;
    first[g] = std::min(first[g], a);
    last[g] = std::max(last[g], a);
  }
  std::size_t rows = 0;
  for (std::size_t g = 0; g < n_groups; ++g) {
    const std::size_t len = std::min(cols, (g + 1) * gs) - g * gs;
    if (last[g] - first[g] + 1 != len) rows = std::max(rows, first[g]);
  }
  return rows;
}

void inverse_top(const double* s, std::size_t cols, std::size_t rows, double* top) {
  if (rows == 0 || cols == 0) return;
  // U[:rows, :]^T solves S^T X = I[:, :rows] (S^T lower: forward substitution).
  const auto n = static_cast<Eigen::Index>(cols), k = static_cast<Eigen::Index>(rows);
  const Eigen::Map<const RowMajorMat> S(s, n, n);
  Mat x = Mat::Identity(n, k);
  S.transpose().triangularView<Eigen::Lower>().solveInPlace(x);
  Eigen::Map<RowMajorMat>(top, k, n) = x.transpose();
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

int check_hessian(const double* h, std::size_t n, double rtol, double atol_scale) {
  // One pass by square blocks; the block below the diagonal is first copied
  // transposed (contiguous reads), so the comparison runs on contiguous rows.
  // The tolerance needs max|h|, known only at the end: each mirrored pair
  // gives its excess |a - b| - rtol * min(|a|, |b|) (np.allclose's test at
  // both (i, j) and (j, i)), and the largest is compared with atol once.
  double amax = 0.0, excess = 0.0;
  bool finite = true;
  constexpr std::size_t kb = 64;
  std::vector<double> t(kb * kb);
  for (std::size_t i0 = 0; i0 < n; i0 += kb)
    for (std::size_t j0 = i0; j0 < n; j0 += kb) {
      const std::size_t bi = std::min(kb, n - i0), bj = std::min(kb, n - j0);
      for (std::size_t j = 0; j < bj; ++j)
        for (std::size_t i = 0; i < bi; ++i) t[i * kb + j] = h[(j0 + j) * n + i0 + i];
      for (std::size_t i = 0; i < bi; ++i) {
        const double* a = h + (i0 + i) * n + j0;
        const double* b = t.data() + i * kb;
        for (std::size_t j = 0; j < bj; ++j) {
          const double x = std::abs(a[j]), y = std::abs(b[j]);
          // Both tested: std::max(x, NaN) is x, so a NaN of the lower block
          // would hide behind a finite upper one.
          finite &= (x <= std::numeric_limits<double>::max()) & (y <= std::numeric_limits<double>::max());
          amax = std::max(amax, std::max(x, y));
          excess = std::max(excess, std::abs(a[j] - b[j]) - rtol * std::min(x, y));
        }
      }
    }
  if (!finite) return 1;
  return excess <= atol_scale * amax ? 0 : 2;
}

double quantize(const float* w, std::size_t rows, std::size_t cols, const double* h, const QuantOptions& opt,
                std::uint8_t* codes, float* scale, std::int32_t* zero_point) {
  if (rows == 0 || cols == 0) return 0.0;
  const Factor f = factor(h, cols, opt.act_order, opt.damp);
  FactorRef ref = f.ref();
  ref.top_rows = top_rows(f.order.data(), cols, opt.group_size);
  std::vector<double> top(ref.top_rows * cols);
  inverse_top(f.s.data(), cols, ref.top_rows, top.data());
  ref.top = top.data();
  return quantize(w, rows, cols, ref, opt, codes, scale, zero_point);
}

double quantize(const float* w, std::size_t rows, std::size_t cols, const FactorRef& f, const QuantOptions& opt,
                std::uint8_t* codes, float* scale, std::int32_t* zero_point) {
  if (rows == 0 || cols == 0) return 0.0;
  const std::size_t gs = opt.group_size == 0 ? cols : opt.group_size;
  const std::size_t n_groups = (cols + gs - 1) / gs;
  const std::size_t B = opt.block_size;
  if (f.top_rows < top_rows(f.order, cols, opt.group_size))
    throw std::invalid_argument("top: expected the first " + std::to_string(top_rows(f.order, cols, opt.group_size)) +
                                " rows of U, got " + std::to_string(f.top_rows));
  const int qmax_i = opt.symmetric ? (1 << (opt.bits - 1)) - 1 : (1 << opt.bits) - 1;
  const float qmax = static_cast<float>(qmax_i), qmin = opt.symmetric ? -qmax : 0.0f;
  std::vector<std::size_t> pos(cols);
  for (std::size_t a = 0; a < cols; ++a) pos[static_cast<std::size_t>(f.order[a])] = a;
  // A group whose positions are one range [p, q) gets its weights as of p
  // through inv(S[p:q, p:q]); any other (act-order) through the top rows of U.
  std::vector<std::size_t> first(n_groups, cols);
  for (std::size_t c = 0; c < cols; ++c) first[c / gs] = std::min(first[c / gs], pos[c]);
  std::vector<char> contiguous(n_groups);
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  std::size_t range_max = 0;
  for (std::size_t g = 0; g < n_groups; ++g) {
    const std::size_t len = std::min(cols, (g + 1) * gs) - g * gs;
    contiguous[g] = 1;
    for (std::size_t c = g * gs; c < g * gs + len; ++c) contiguous[g] &= pos[c] < first[g] + len;
    if (contiguous[g] && first[g] > 0) {
      ranges.emplace_back(first[g], first[g] + len);
      range_max = std::max(range_max, len);
    }
  }
  const RangeInverses ri(f.s, cols, ranges);
  const PackedS ps(f, cols, B);
  const std::vector<double> rs = reciprocal_diagonal(f, cols);

  const int rounding = static_cast<int>(quant::Rounding::half_even);
  return parallel_sum(rows, kRowChunk, [&](std::size_t r0, std::size_t r1) {
    const std::size_t R = r1 - r0;
    Chunk ch(w, f, ps, cols, r0, R, B, kSub, range_max);
    // Group parameters group-major (g * R + r), as the per-row kernels read them.
    std::vector<float> g_scale(R * n_groups), g_inv(R * n_groups), g_zp(R * n_groups);
    std::vector<char> have(n_groups, 0), g_div(n_groups, 0);
    std::vector<float> lo(R), hi(R), xf(R), deq(R);
    std::vector<std::uint8_t> code(R);
    std::vector<double> v(R), vals(R * range_max), x(R);
    double loss = 0.0;
    auto extend = [&](const double* col, bool first_col) {  // the group's min / max so far, in float32
      for (std::size_t r = 0; r < R; ++r) {
        const float xv = static_cast<float>(col[r]);
        lo[r] = first_col || xv < lo[r] ? xv : lo[r];
        hi[r] = first_col || hi[r] < xv ? xv : hi[r];
      }
    };
    for (std::size_t i1 = 0; i1 < cols; i1 += B) {
      const std::size_t i2 = std::min(cols, i1 + B);
      ch.start_block(i1, i2);
      for (std::size_t i = i1; i < i2; ++i) {
        const auto oc = static_cast<std::size_t>(f.order[i]);
        const std::size_t g = oc / gs;
        float* const sc = g_scale.data() + g * R;
        float* const inv = g_inv.data() + g * R;
        float* const zp = g_zp.data() + g * R;
        if (!have[g]) {  // the group's parameters, from its weights as of now
          have[g] = 1;
          const std::size_t c0 = g * gs, c1 = std::min(cols, (g + 1) * gs);
          if (contiguous[g]) {  // positions [i, i + c1 - c0)
            if (i == 0) {
              for (std::size_t a = 0; a < c1 - c0; ++a) extend(ch.col(a), a == 0);
            } else {
              ch.range_values(i, i + c1 - c0, i1, i2, ri, vals.data());
              for (std::size_t a = 0; a < c1 - c0; ++a) extend(vals.data() + a * R, a == 0);
            }
          } else {
            for (std::size_t c = c0; c < c1; ++c) {
              ch.top_value(pos[c], i, v.data());
              extend(v.data(), c == c0);
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
        // Column i's weight, then its codes and their values: the quantizer's
        // per-row kernels (bit for bit its scalar reference on every ISA); a
        // group with a subnormal scale (divides instead of multiplying) goes
        // through the scalar one.
        double* const d = ch.col(i);
        const double* const a = ch.acc_col(i, i1);
        for (std::size_t r = 0; r < R; ++r) {
          x[r] = std::fma(a[r], rs[i], d[r]);
          xf[r] = static_cast<float>(x[r]);
        }
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
        const double sii = f.s[i * cols + i];
        double* const ne = ch.ne.empty() ? nullptr : ch.ne.data() + i * R;
        for (std::size_t r = 0; r < R; ++r) {
          codes[(r0 + r) * cols + oc] = code[r];
          const double q = static_cast<double>(deq[r]);
          const double e = (x[r] - q) * sii;  // E = D S: the OBS error (w - q) / U[i, i]
          loss += e * e;
          if (ne) ne[r] = -e;
          d[r] -= q;  // D_i = W0_i - Q_i
        }
        ch.spread_in_block(i, i1, i2);
      }
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
  const Factor f = factor(h, cols, false, opt.damp);
  return prune(w, rows, cols, f.ref(), opt, out, keep);
}

double prune(const float* w, std::size_t rows, std::size_t cols, const FactorRef& f, const PruneOptions& opt,
             float* out, std::uint8_t* keep) {
  if (rows == 0 || cols == 0) return 0.0;
  const std::size_t B = opt.block_size;
  const bool nm = opt.m > 0;
  // The ranges whose weights are scored as of their first column: each block
  // (unstructured) or each group of m (N:M; inside one block, as m divides B).
  const std::size_t step = nm ? opt.m : B;
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  for (std::size_t p = step; p < cols; p += step) ranges.emplace_back(p, std::min(cols, p + step));
  const RangeInverses ri(f.s, cols, ranges);
  const PackedS ps(f, cols, B);
  const std::vector<double> rs = reciprocal_diagonal(f, cols);

  return parallel_sum(rows, kRowChunk, [&](std::size_t r0, std::size_t r1) {
    const std::size_t R = r1 - r0;
    // N:M groups start at multiples of m in a block: keep them inside one sub-block
    const std::size_t sub = nm ? opt.m * std::max<std::size_t>(1, kSub / opt.m) : kSub;
    Chunk ch(w, f, ps, cols, r0, R, B, sub, std::min(cols, step));
    std::fill(keep + r0 * cols, keep + r1 * cols, std::uint8_t{1});
    std::vector<double> score(cols), vals(R * std::min(cols, step));
    std::vector<std::size_t> cand;
    double loss = 0.0;
    // Prunes k of the positions [a0, a1) in every row, scored from their
    // weights as of a0 (i1, i2: the block holding a0).
    auto choose = [&](std::size_t a0, std::size_t a1, std::size_t k, std::size_t i1, std::size_t i2) {
      ch.range_values(a0, a1, i1, i2, ri, vals.data());
      for (std::size_t r = 0; r < R; ++r) {
        cand.clear();
        for (std::size_t a = a0; a < a1; ++a) {
          const double x = vals[(a - a0) * R + r], d = rs[a];  // d = U[a, a]
          score[a] = x * x / (d * d);
          cand.push_back(a);
        }
        prune_smallest(cand, k, score, f.order, keep + (r0 + r) * cols);
      }
    };
    for (std::size_t i1 = 0; i1 < cols; i1 += B) {
      const std::size_t i2 = std::min(cols, i1 + B);
      ch.start_block(i1, i2);
      if (!nm)
        choose(i1, i2, static_cast<std::size_t>(std::nearbyint(opt.sparsity * static_cast<double>(i2 - i1))), i1, i2);
      for (std::size_t i = i1; i < i2; ++i) {
        if (nm && (i - i1) % opt.m == 0) choose(i, i + opt.m, opt.m - opt.n, i1, i2);
        const double sii = f.s[i * cols + i];
        double* const d = ch.col(i);
        const double* const a = ch.acc_col(i, i1);
        for (std::size_t r = 0; r < R; ++r) {
          const std::size_t at = (r0 + r) * cols + static_cast<std::size_t>(f.order[i]);
          const double x = std::fma(a[r], rs[i], d[r]);
          const double q = keep[at] ? x : 0.0;
          out[at] = static_cast<float>(q);
          const double e = (x - q) * sii;
          loss += e * e;
          d[r] -= q;
        }
        ch.spread_in_block(i, i1, i2);
      }
    }
    return loss / 2.0;
  });
}

}  // namespace slimgrad::gptq
