// Bindings of Muon's and Prodigy's elementwise passes (muon_prodigy.hpp), in
// slimgrad._core.optim. Same contract as register_optim_extra.cpp: lists of
// arrays plus labels, every array checked (list_args.hpp) before any memory
// is touched, then the GIL is released and one C++ call runs the pass.
#include <cmath>
#include <cstdint>
#include <string>
#include <algorithm>
#include <vector>

#include <pybind11/stl.h>

#include "buffers.hpp"
#include "outputs.hpp"
#include "list_args.hpp"
#include "slimgrad/bf16_gemm.hpp"
#include "slimgrad/muon_prodigy.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad::bind {
namespace {

// ------------------------------------------------------------------ Muon
// The passes around the Newton-Schulz products (the products run in NumPy's
// BLAS, slimgrad.optim._muon).
py::list muon_momentum_call(py::handle grads, py::handle bufs, py::handle works, py::handle labels, double momentum,
                            bool nesterov, bool round_bf16) {
  const auto lab = label_list(labels, as_list(grads, "grads").size());
  const auto g = check_first(grads, "grads", lab, {DType::f32, DType::f64}, Access::read);
  const auto b = check_list_like(bufs, "momentum_buffer", lab, g, Access::write);
  const auto w = check_list_shaped(works, "work", lab, g, DType::f32, Access::write);
  check_finite_scalar("momentum", momentum);
  std::vector<double> sums(g.size(), 0.0);
  if (!g.empty()) {
    const auto n = sizes_of(g);
    const auto wp = ptrs<float>(w);
    py::gil_scoped_release release;
    if (g[0].dtype == DType::f32) {
      const auto gp = ptrs<float>(g);
      const std::vector<const float*> gc(gp.begin(), gp.end());
      muon_momentum_step<float>(gc.data(), ptrs<float>(b).data(), wp.data(), n.data(), n.size(),
                                {static_cast<float>(momentum), static_cast<float>(1.0 - momentum), nesterov, round_bf16}, sums.data());
    } else {
      const auto gp = ptrs<double>(g);
      const std::vector<const double*> gc(gp.begin(), gp.end());
      muon_momentum_step<double>(gc.data(), ptrs<double>(b).data(), wp.data(), n.data(), n.size(),
                                 {momentum, 1.0 - momentum, nesterov, round_bf16}, sums.data());
    }
  }
  py::list out;
  for (double s : sums) out.append(s);
  return out;
}

void muon_normalize_call(py::handle works, const std::vector<double>& norms, py::handle labels, bool round_bf16) {
  const auto lab = label_list(labels, as_list(works, "works").size());
  const auto w = check_first(works, "works", lab, {DType::f32}, Access::write);
  if (norms.size() != w.size())
    throw py::value_error("norms: expected " + std::to_string(w.size()) + " values, got " +
                          std::to_string(norms.size()));
  std::vector<float> nf;
  for (double x : norms) {
    if (!(x > 0.0) || !std::isfinite(x))
      throw py::value_error("norms: expected finite values > 0, got " + std::to_string(x));
    nf.push_back(static_cast<float>(x));
  }
  if (w.empty()) return;
  const auto n = sizes_of(w);
  const auto wp = ptrs<float>(w);
  py::gil_scoped_release release;
  muon_normalize_all(wp.data(), n.data(), n.size(), nf.data(), round_bf16);
}

void ns_combine_call(py::handle out, py::handle c, double alpha, double beta, bool round_bf16) {
  const Array o = check_array(out, "out", {DType::f32}, Access::write);
  Array ca;
  const bool has_c = !c.is_none();
  if (has_c) {
    ca = check_like(c, "c", o, Access::read);
    check_same_or_disjoint(o, {&ca});
  }
  check_finite_scalar("alpha", alpha);
  check_finite_scalar("beta", beta);
  const std::size_t n = o.size();
  float* op = o.mut<float>();
  const float* cp = has_c ? ca.ptr<float>() : nullptr;
  py::gil_scoped_release release;
  if (n) ns_combine_all(op, cp, n, static_cast<float>(alpha), static_cast<float>(beta), round_bf16);
}

void muon_apply_call(py::handle params, py::handle works, py::handle labels, double decay,
                     const std::vector<double>& lrs) {
  const auto lab = label_list(labels, as_list(params, "params").size());
  const auto p = check_first(params, "params", lab, {DType::f32, DType::f64}, Access::write);
  const auto w = check_list_shaped(works, "work", lab, p, DType::f32, Access::read);
  check_finite_scalar("decay", decay);
  if (lrs.size() != p.size())
    throw py::value_error("lrs: expected " + std::to_string(p.size()) + " values, got " + std::to_string(lrs.size()));
  for (double x : lrs) check_finite_scalar("lrs", x);
  if (p.empty()) return;
  const auto n = sizes_of(p);
  const auto wp = ptrs<float>(w);
  const std::vector<const float*> wc(wp.begin(), wp.end());
  py::gil_scoped_release release;
  if (p[0].dtype == DType::f32)
    muon_apply_step<float>(ptrs<float>(p).data(), wc.data(), n.data(), n.size(), static_cast<float>(decay),
                           lrs.data());
  else
    muon_apply_step<double>(ptrs<double>(p).data(), wc.data(), n.data(), n.size(), decay, lrs.data());
}

// Muon's bfloat16 Newton-Schulz iteration (bf16_gemm.hpp) on 2-D float32
// work matrices, in place.
void muon_newton_schulz_call(py::handle works, py::handle labels, const std::vector<double>& coefficients,
                             int steps) {
  const auto lab = label_list(labels, as_list(works, "works").size());
  const auto w = check_first(works, "works", lab, {DType::f32}, Access::write);
  for (const auto& a : w)
    if (a.ndim() != 2)
      throw py::value_error(a.name + ": expected a 2-D float32 array, got shape " + shape_str(a.shape()));
  check_no_overlap({&w}, {});
  if (coefficients.size() != 3)
    throw py::value_error("coefficients: expected 3 values (a, b, c), got " + std::to_string(coefficients.size()));
  for (double x : coefficients) check_finite_scalar("coefficients", x);
  if (steps < 0) throw py::value_error("steps: expected an int >= 0, got " + std::to_string(steps));
  std::vector<std::size_t> rows, cols;
  for (const auto& a : w) {
    rows.push_back(static_cast<std::size_t>(a.dim(0)));
    cols.push_back(static_cast<std::size_t>(a.dim(1)));
  }
  const auto wp = ptrs<float>(w);
  py::gil_scoped_release release;
  muon_ns_bf16(wp.data(), rows.data(), cols.data(), wp.size(), static_cast<float>(coefficients[0]),
               static_cast<float>(coefficients[1]), static_cast<float>(coefficients[2]), steps);
}

// The bfloat16 GEMM alone (tests, bench): a (m x k) @ (b^T if trans_b else b).
py::array_t<float> bf16_matmul_call(py::handle a, py::handle b, bool trans_b, bool lower) {
  const Array aa = check_array(a, "a", {DType::bf16}, Access::read);
  const Array ba = check_array(b, "b", {DType::bf16}, Access::read);
  if (aa.ndim() != 2) throw py::value_error("a: expected a 2-D bfloat16 array, got shape " + shape_str(aa.shape()));
  if (ba.ndim() != 2) throw py::value_error("b: expected a 2-D bfloat16 array, got shape " + shape_str(ba.shape()));
  const auto m = static_cast<std::size_t>(aa.dim(0)), k = static_cast<std::size_t>(aa.dim(1));
  const auto n = static_cast<std::size_t>(trans_b ? ba.dim(0) : ba.dim(1));
  const auto kb = static_cast<std::size_t>(trans_b ? ba.dim(1) : ba.dim(0));
  if (kb != k)
    throw py::value_error("b: expected " + std::string(trans_b ? "(n, k)" : "(k, n)") + " with k = " +
                          std::to_string(k) + " (a's columns), got shape " + shape_str(ba.shape()));
  if (lower && m != n)
    throw py::value_error("lower: needs a square product, got " + std::to_string(m) + " x " + std::to_string(n));
  py::array out = new_output(py::dtype("float32"), {static_cast<py::ssize_t>(m), static_cast<py::ssize_t>(n)});
  auto* c = static_cast<float*>(out.mutable_data());
  if (lower) std::fill(c, c + m * n, 0.0f);  // the unspecified upper part reads as 0
  const Bf16Gemm g{aa.ptr<std::uint16_t>(), k, ba.ptr<std::uint16_t>(), trans_b ? k : n, trans_b, c, n, m, n, k,
                   lower, get_num_threads()};
  py::gil_scoped_release release;
  bf16_gemm(g);
  if (lower)
    for (std::size_t i = 0; i < m; ++i)
      for (std::size_t j = i + 1; j < n; ++j) c[i * n + j] = 0.0f;
  return out;
}

void bind_muon(py::module_& m) {
  m.def("muon_newton_schulz", &muon_newton_schulz_call, py::arg("works"), py::arg("labels") = py::none(),
        py::kw_only(), py::arg("coefficients"), py::arg("steps"),
        "Muon's Newton-Schulz iteration in bfloat16 (torch.optim.Muon's rounding), in place on 2-D float32\n"
        "arrays holding bfloat16 values; C++ bfloat16 GEMM (vdpbf16ps on avx512_bf16), symmetric products\n"
        "computed by half.");
  m.def("bf16_matmul", &bf16_matmul_call, py::arg("a"), py::arg("b"), py::kw_only(), py::arg("trans_b") = false,
        py::arg("lower") = false,
        "a @ (b.T if trans_b else b) of bfloat16 matrices, float32 accumulation (fixed order per element, see\n"
        "bf16_gemm.hpp), a new float32 array; lower: only j <= i (square), the rest 0.");
  m.def("muon_momentum", &muon_momentum_call, py::arg("grads"), py::arg("bufs"), py::arg("works"),
        py::arg("labels") = py::none(), py::kw_only(), py::arg("momentum"), py::arg("nesterov"),
        py::arg("round_bf16"),
        "Muon's momentum pass (torch's lerp) writing the Newton-Schulz input (float32, rounded to bfloat16\n"
        "if round_bf16) into works; returns each work array's sum of squares.");
  m.def("muon_normalize", &muon_normalize_call, py::arg("works"), py::arg("norms"), py::arg("labels") = py::none(),
        py::kw_only(), py::arg("round_bf16"),
        "works[i] /= norms[i] in place (float32), rounded to bfloat16 if round_bf16.");
  m.def("ns_combine", &ns_combine_call, py::arg("out"), py::arg("c"), py::kw_only(), py::arg("alpha"),
        py::arg("beta"), py::arg("round_bf16"),
        "out = beta * c + alpha * out in place (float32; torch's addmm epilogue), rounded to bfloat16 if\n"
        "round_bf16; c None means no beta * c term.");
  m.def("muon_apply", &muon_apply_call, py::arg("params"), py::arg("works"), py::arg("labels") = py::none(),
        py::kw_only(), py::arg("decay"), py::arg("lrs"),
        "params = params * decay - lrs[i] * works[i] in place (Muon's update).");
}

// --------------------------------------------------------------- Prodigy
struct ProdigyArrays {
  std::vector<Array> p, g, m, v, s, p0;
};

// stats: pass 1 (writes m, v, s; reads p, p0), else pass 2 (writes p).
ProdigyArrays check_prodigy(py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs,
                            py::handle s, py::handle p0, py::handle labels, std::int64_t slice_p, bool stats) {
  ProdigyArrays a;
  const auto lab = label_list(labels, as_list(params, "params").size());
  const Access state = stats ? Access::write : Access::read;
  a.p = check_first(params, "params", lab, {DType::f32, DType::f64}, stats ? Access::read : Access::write);
  a.g = check_list_like(grads, "grads", lab, a.p, Access::read);
  if (!exp_avgs.is_none()) a.m = check_list_like(exp_avgs, "exp_avg", lab, a.p, state);
  a.v = check_list_like(exp_avg_sqs, "exp_avg_sq", lab, a.p, state);
  if (!stats) return a;
  if (slice_p < 1) throw py::value_error("slice_p: expected >= 1, got " + std::to_string(slice_p));
  const py::list sl = as_list(s, "s"), pl = as_list(p0, "p0");
  if (sl.size() != a.p.size() || pl.size() != a.p.size())
    throw py::value_error("s, p0: expected " + std::to_string(a.p.size()) + " arrays each, got " +
                          std::to_string(sl.size()) + " and " + std::to_string(pl.size()));
  const auto sp = static_cast<std::size_t>(slice_p);
  for (std::size_t i = 0; i < a.p.size(); ++i) {
    const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>((a.p[i].size() + sp - 1) / sp)};
    a.s.push_back(check_array(sl[i], "s" + lab[i], {a.p[0].dtype}, Access::write, &shape));
    a.p0.push_back(check_array(pl[i], "p0" + lab[i], {a.p[0].dtype}, Access::read, &shape));
  }
  return a;
}

template <class T>
std::vector<const T*> cptrs(const std::vector<Array>& a, std::size_t n) {
  std::vector<const T*> out;
  for (const auto& x : a) out.push_back(x.template ptr<T>());
  out.resize(n, nullptr);  // exp_avg absent (beta1 == 0): null pointers
  return out;
}

template <class T>
std::vector<double> prodigy_run(const ProdigyArrays& a, const ProdigyCoef<T>& c, bool stats) {
  const auto n = sizes_of(a.p);
  const std::vector<ProdigyCoef<T>> coef(n.size(), c);
  auto m = ptrs<T>(a.m);
  m.resize(n.size(), nullptr);
  const auto g = cptrs<T>(a.g, n.size());
  std::vector<double> sums(2 * n.size(), 0.0);
  py::gil_scoped_release release;
  if (stats) {
    prodigy_accumulate_step<T>(cptrs<T>(a.p, n.size()).data(), g.data(), m.data(), ptrs<T>(a.v).data(),
                               ptrs<T>(a.s).data(), cptrs<T>(a.p0, n.size()).data(), n.data(), n.size(),
                               coef.data(), sums.data());
  } else {
    const std::vector<const T*> mc(m.begin(), m.end());
    prodigy_apply_step<T>(ptrs<T>(a.p).data(), g.data(), mc.data(), cptrs<T>(a.v, n.size()).data(), n.data(),
                          n.size(), coef.data());
  }
  return sums;
}

template <class T>
ProdigyCoef<T> coef_of(const std::vector<double>& x, bool has_m, std::int64_t slice_p) {
  return {T(x[0]), T(x[1]), T(x[2]), T(x[3]), T(x[4]), T(x[5]), T(x[6]), T(x[7]), T(x[8]), T(x[9]),
          has_m,   static_cast<std::size_t>(slice_p)};
}

void bind_prodigy(py::module_& m) {
  m.def(
      "prodigy_accumulate",
      [](py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, py::handle s,
         py::handle p0, py::handle labels, double beta1, double beta2, double beta3, double m_scale, double v_scale,
         double s_scale, double coupled_decay, std::int64_t slice_p) {
        const auto a = check_prodigy(params, grads, exp_avgs, exp_avg_sqs, s, p0, labels, slice_p, true);
        const std::vector<double> x{beta1, beta2, beta3, m_scale, v_scale, s_scale, coupled_decay, 0, 0, 0};
        const char* names[] = {"beta1", "beta2", "beta3", "m_scale", "v_scale", "s_scale", "coupled_decay"};
        for (int i = 0; i < 7; ++i) check_finite_scalar(names[i], x[i]);
        py::list out;
        if (a.p.empty()) return out;
        const bool has_m = !exp_avgs.is_none();
        const auto sums = a.p[0].dtype == DType::f32 ? prodigy_run<float>(a, coef_of<float>(x, has_m, slice_p), true)
                                                     : prodigy_run<double>(a, coef_of<double>(x, has_m, slice_p), true);
        for (double v : sums) out.append(v);
        return out;
      },
      py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("s"), py::arg("p0"),
      py::arg("labels") = py::none(), py::kw_only(), py::arg("beta1"), py::arg("beta2"), py::arg("beta3"),
      py::arg("m_scale"), py::arg("v_scale"), py::arg("s_scale"), py::arg("coupled_decay"), py::arg("slice_p"),
      "Prodigy pass 1 in place (exp_avg (None if beta1 == 0), exp_avg_sq, s); returns\n"
      "[num_0, den_0, num_1, den_1, ...]: each array's sum g'*(p0 - p) and sum |s| over its sliced elements.");
  m.def(
      "prodigy_apply",
      [](py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, py::handle labels,
         double coupled_decay, double d_eps, double decoupled, double step) {
        const auto a = check_prodigy(params, grads, exp_avgs, exp_avg_sqs, py::none(), py::none(), labels, 1, false);
        const std::vector<double> x{0, 0, 0, 0, 0, 0, coupled_decay, d_eps, decoupled, step};
        const char* names[] = {"coupled_decay", "d_eps", "decoupled", "step"};
        for (int i = 0; i < 4; ++i) check_finite_scalar(names[i], x[6 + i]);
        if (a.p.empty()) return;
        const bool has_m = !exp_avgs.is_none();
        if (a.p[0].dtype == DType::f32)
          prodigy_run<float>(a, coef_of<float>(x, has_m, 1), false);
        else
          prodigy_run<double>(a, coef_of<double>(x, has_m, 1), false);
      },
      py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("labels") = py::none(),
      py::kw_only(), py::arg("coupled_decay"), py::arg("d_eps"), py::arg("decoupled"), py::arg("step"),
      "Prodigy pass 2 in place: p = p + decoupled*p; p = p + step * (exp_avg or g') / (sqrt(exp_avg_sq) + d_eps).");
}

}  // namespace

void register_muon_prodigy(py::module_& m) { bind_all(m, {bind_muon, bind_prodigy}); }

}  // namespace slimgrad::bind
