// Threaded, dispatched entry points of the distillation kernels (see distill.hpp).
//
// kd_loss: rows run in parallel in fixed chunks of rows; each row is one
// statistics pass and one gradient pass (the ISA kernels), plus O(k) scalar
// work for a top-k teacher and O(1) for the label. The per-row losses go to a
// vector and are added in row order, so the loss is identical for any thread
// count; the gradient rows are independent, so they are too.
#include "slimgrad/distill.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "slimgrad/threading.hpp"

namespace slimgrad {

namespace {

// Rows per parallel chunk: about 16k logits of work, never a fraction of a row.
std::size_t row_grain(std::size_t classes) {
  const std::size_t rows = std::size_t{1} << 14;
  return classes >= rows ? 1 : rows / classes;
}

template <Isa I, class T>
void kd_rows(const T* student, const T* teacher, const std::int64_t* teacher_indices, std::size_t k,
             const std::int64_t* labels, T* grad, std::size_t batch, std::size_t classes,
             const KdOptions& o, double* kl_rows, double* ce_rows) {
  const bool kl = o.alpha > 0, ce = o.alpha < 1;
  const bool dense = kl && teacher_indices == nullptr;
  const T inv_t = static_cast<T>(1.0 / o.temperature);
  KdRowMode mode;
  mode.z = kl;
  mode.t = dense;
  // At T == 1 the cross-entropy's softmax is the KL term's student softmax.
  mode.u = ce && !(kl && inv_t == T(1));
  const double c_kl = o.alpha * o.temperature * o.kl_scale;
  const double c_ce = (1 - o.alpha) * o.ce_scale;

  parallel_for(batch, row_grain(classes), [&](std::size_t rb, std::size_t re) {
    for (std::size_t r = rb; r < re; ++r) {
      const T* s = student + r * classes;
      const T* t = dense ? teacher + r * classes : nullptr;
      T* g = grad + r * classes;
      KdRowStats st;
      kernels::kd_row_stats<I, T>(s, t, classes, inv_t, mode, &st);

      KdGradTerms<T> c{};
      c.inv_t = inv_t;
      c.a_s = static_cast<T>(static_cast<T>(st.s_max) * inv_t);
      const double l_s = std::log(st.z_sum);
      c.l_s = static_cast<T>(l_s);
      double kl_r = 0, ce_r = 0, tk_sum = 0;
      if (dense) {
        c.a_t = static_cast<T>(static_cast<T>(st.t_max) * inv_t);
        const double l_t = std::log(st.t_sum);
        c.l_t = static_cast<T>(l_t);
        kl_r = st.w / st.t_sum - l_t + l_s;
      } else if (kl) {
        // Top-k teacher: softmax over the k given logits only (the mass of
        // the other classes is taken as 0), same arithmetic as the dense
        // statistics pass, in double.
        const T* tv = teacher + r * k;
        const std::int64_t* ti = teacher_indices + r * k;
        T t_max = -std::numeric_limits<T>::infinity();
        for (std::size_t j = 0; j < k; ++j) t_max = tv[j] > t_max ? tv[j] : t_max;
        c.a_t = static_cast<T>(t_max * inv_t);
        double w = 0;
        for (std::size_t j = 0; j < k; ++j) {
          const T dt = static_cast<T>(tv[j] * inv_t) - c.a_t;
          const T dz = static_cast<T>(s[ti[j]] * inv_t) - c.a_s;
          const double e = std::exp(static_cast<double>(dt));
          tk_sum += e;
          // p_t == 0 (a -inf value: masked) contributes 0, as in the dense pass.
          if (!(e <= 0)) w += e * static_cast<double>(dt - dz);
        }
        const double l_t = std::log(tk_sum);
        c.l_t = static_cast<T>(l_t);
        kl_r = w / tk_sum - l_t + l_s;
      }
      if (ce) {
        const T label_logit = s[labels[r]];
        if (mode.u) {
          ce_r = (st.s_max - static_cast<double>(label_logit)) + std::log(st.u_sum);
          c.m_u = static_cast<T>(st.s_max);
          c.l_u = static_cast<T>(std::log(st.u_sum));
        } else {  // shares the KL term's softmax (T == 1, so a_s == s_max)
          ce_r = (static_cast<double>(c.a_s) - static_cast<double>(label_logit)) + l_s;
        }
      }
      c.c_z = static_cast<T>(kl ? c_kl + (ce && !mode.u ? c_ce : 0.0) : 0.0);
      c.c_t = static_cast<T>(c_kl);
      c.c_u = static_cast<T>(c_ce);
      // Everything read from s above: g may now overwrite it (out=student).
      kernels::kd_row_grad<I, T>(s, t, g, classes, c, mode);
      if (kl && !dense) {
        const T* tv = teacher + r * k;
        const std::int64_t* ti = teacher_indices + r * k;
        for (std::size_t j = 0; j < k; ++j) {
          const T dt = static_cast<T>(tv[j] * inv_t) - c.a_t;
          const double p = std::exp(static_cast<double>(dt) - static_cast<double>(c.l_t));
          g[ti[j]] -= static_cast<T>(c_kl * p);
        }
      }
      if (ce) g[labels[r]] -= static_cast<T>(c_ce);
      kl_rows[r] = kl_r;
      ce_rows[r] = ce_r;
    }
  });
}

}  // namespace

template <class T>
double kd_loss(const T* student, const T* teacher, const std::int64_t* teacher_indices, std::size_t k,
               const std::int64_t* labels, T* grad, std::size_t batch, std::size_t classes,
               const KdOptions& o) {
  std::vector<double> kl_rows(batch), ce_rows(batch);
  dispatch([&](auto isa) {
    kd_rows<decltype(isa)::value, T>(student, teacher, teacher_indices, k, labels, grad, batch, classes,
                                     o, kl_rows.data(), ce_rows.data());
  });
  double kl = 0, ce = 0;
  for (std::size_t r = 0; r < batch; ++r) {
    kl += kl_rows[r];
    ce += ce_rows[r];
  }
  // A term with weight 0 is left out entirely (its rows were never computed).
  double loss = 0;
  if (o.alpha > 0) loss += o.alpha * o.temperature * o.temperature * o.kl_scale * kl;
  if (o.alpha < 1) loss += (1 - o.alpha) * o.ce_scale * ce;
  return loss;
}

template <class T>
double mse_loss(const T* student, const T* teacher, T* grad, std::size_t n) {
  const T scale = static_cast<T>(2.0 / static_cast<double>(n));
  const double sum = dispatch([&](auto isa) {
    return parallel_sum(n, kMseBlock, [&](std::size_t b, std::size_t e) {
      return kernels::mse_grad<decltype(isa)::value, T>(student + b, teacher + b, grad + b, e - b, scale);
    });
  });
  return sum / static_cast<double>(n);  // n == 0: NaN, the mean of nothing (as torch)
}

template <class T>
void vector_exp(const T* x, T* y, std::size_t n) {
  dispatch([&](auto isa) {
    parallel_for(n, kGrain, [&](std::size_t b, std::size_t e) {
      kernels::exp<decltype(isa)::value, T>(x + b, y + b, e - b);
    });
  });
}

template double kd_loss<float>(const float*, const float*, const std::int64_t*, std::size_t,
                               const std::int64_t*, float*, std::size_t, std::size_t, const KdOptions&);
template double kd_loss<double>(const double*, const double*, const std::int64_t*, std::size_t,
                                const std::int64_t*, double*, std::size_t, std::size_t, const KdOptions&);
template double mse_loss<float>(const float*, const float*, float*, std::size_t);
template double mse_loss<double>(const double*, const double*, double*, std::size_t);
template void vector_exp<float>(const float*, float*, std::size_t);
template void vector_exp<double>(const double*, double*, std::size_t);

}  // namespace slimgrad
