// Bindings of the multipass optimizer kernels (LAMB, AdamW8bit, Adafactor,
// gradient clipping and accumulation), in slimgrad._core.optim.
//
// Multi-tensor calls take Python lists of arrays plus `labels` (e.g.
// "['fc1.weight']" or "[3]") so messages name the array as the user knows
// it: "grads['fc1.weight']: expected float32 ...". Every array of every list
// is checked before any memory is touched; then the GIL is released (the
// checked Array objects keep the buffers alive) and one C++ call steps them
// all. Lists are homogeneous in dtype: the Python layer groups by dtype.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "list_args.hpp"
#include "slimgrad/optim_extra.hpp"

namespace slimgrad::bind {
namespace {

// AdamW8bit's scales: one float32 per kQuantBlock elements.
std::vector<py::ssize_t> blocks_shape(std::size_t n) {
  return {static_cast<py::ssize_t>((n + kQuantBlock - 1) / kQuantBlock)};
}

std::vector<Array> check_scales(py::handle obj, const std::string& what, const std::vector<std::string>& labels,
                                const std::vector<Array>& like, Access access) {
  const py::list l = as_list_of(obj, what, like.size());
  std::vector<Array> out;
  for (std::size_t i = 0; i < l.size(); ++i) {
    const auto shape = blocks_shape(like[i].size());
    out.push_back(check_array(l[i], what + labels[i], {DType::f32}, access, &shape));
  }
  return out;
}

// ------------------------------------------------------------------ LAMB
template <class T>
std::vector<double> lamb_call(const std::vector<Array>& p, const std::vector<Array>& g, const std::vector<Array>& m,
                              const std::vector<Array>& v, const LambCoef<T>& c, T lr) {
  const auto pp = ptrs<T>(p), mp = ptrs<T>(m), vp = ptrs<T>(v), gp = ptrs<T>(g);
  std::vector<const T*> gc(gp.begin(), gp.end());
  const auto n = sizes_of(p);
  std::vector<double> ratios(n.size(), 1.0);
  py::gil_scoped_release release;
  lamb_step<T>(pp.data(), gc.data(), mp.data(), vp.data(), n.data(), n.size(), c, lr, ratios.data());
  return ratios;
}

void bind_lamb(py::module_& m) {
  m.def(
      "lamb_step",
      [](py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, py::handle labels,
         double lr, double beta1, double beta2, double eps, double weight_decay, std::int64_t step) {
        const auto lab = label_list(labels, as_list(params, "params").size());
        const auto p = check_first(params, "params", lab, {DType::f32, DType::f64}, Access::write);
        const auto g = check_list_like(grads, "grads", lab, p, Access::read);
        const auto mm = check_list_like(exp_avgs, "exp_avg", lab, p, Access::write);
        const auto vv = check_list_like(exp_avg_sqs, "exp_avg_sq", lab, p, Access::write);
        check_no_overlap({&p, &mm, &vv}, {&g});
        for (auto [name, x] : {std::pair{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps},
                               {"weight_decay", weight_decay}})
          check_finite_scalar(name, x);
        if (step < 1) throw py::value_error("step: expected >= 1, got " + std::to_string(step));
        const double s = static_cast<double>(step);
        const double inv_bc1 = 1.0 / (1.0 - std::pow(beta1, s)), inv_bc2 = 1.0 / (1.0 - std::pow(beta2, s));
        std::vector<double> ratios;
        if (p.empty()) return py::list();
        if (p[0].dtype == DType::f32)
          ratios = lamb_call<float>(p, g, mm, vv,
                                    {float(beta1), float(beta2), float(1 - beta1), float(1 - beta2), float(inv_bc1), float(inv_bc2), float(eps),
                                     float(weight_decay)},
                                    float(lr));
        else
          ratios = lamb_call<double>(p, g, mm, vv, {beta1, beta2, 1 - beta1, 1 - beta2, inv_bc1, inv_bc2, eps, weight_decay}, lr);
        py::list out;
        for (double r : ratios) out.append(r);
        return out;
      },
      py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
      py::arg("labels") = py::none(), py::kw_only(), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
      py::arg("eps"), py::arg("weight_decay"), py::arg("step"),
      "LAMB step of a list of arrays in place; returns the trust ratio of each array.");
}

// ------------------------------------------------------------- AdamW8bit
template <class T>
void adam8_call(const std::vector<Array>& p, const std::vector<Array>& g, const std::vector<Array>& m,
                const std::vector<Array>& v, const std::vector<Array>& ms, const std::vector<Array>& vs,
                const Adam8Coef<T>& c) {
  const auto pp = ptrs<T>(p), gp = ptrs<T>(g);
  std::vector<const T*> gc(gp.begin(), gp.end());
  const auto mp = ptrs<std::int8_t>(m);
  const auto vp = ptrs<std::uint8_t>(v);
  const auto msp = ptrs<float>(ms), vsp = ptrs<float>(vs);
  const auto n = sizes_of(p);
  py::gil_scoped_release release;
  adamw8bit_step<T>(pp.data(), gc.data(), mp.data(), vp.data(), msp.data(), vsp.data(), n.data(), n.size(), c);
}

void bind_adamw8bit(py::module_& m) {
  m.def(
      "adamw8bit_step",
      [](py::handle params, py::handle grads, py::handle exp_avgs, py::handle exp_avg_sqs, py::handle exp_avg_scales,
         py::handle exp_avg_sq_scales, py::handle labels, double lr, double beta1, double beta2, double eps,
         double weight_decay, std::int64_t step, bool maximize) {
        const auto lab = label_list(labels, as_list(params, "params").size());
        const auto p = check_first(params, "params", lab, {DType::f32, DType::f64}, Access::write);
        const auto g = check_list_like(grads, "grads", lab, p, Access::read);
        const auto mm = check_list_shaped(exp_avgs, "exp_avg", lab, p, DType::i8, Access::write);
        const auto vv = check_list_shaped(exp_avg_sqs, "exp_avg_sq", lab, p, DType::u8, Access::write);
        const auto ms = check_scales(exp_avg_scales, "exp_avg_scale", lab, p, Access::write);
        const auto vs = check_scales(exp_avg_sq_scales, "exp_avg_sq_scale", lab, p, Access::write);
        check_no_overlap({&p, &mm, &vv, &ms, &vs}, {&g});
        for (auto [name, x] : {std::pair{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps},
                               {"weight_decay", weight_decay}})
          check_finite_scalar(name, x);
        if (step < 1) throw py::value_error("step: expected >= 1, got " + std::to_string(step));
        if (p.empty()) return;
        const double s = static_cast<double>(step);
        const double bc1 = 1.0 - std::pow(beta1, s), bc2 = 1.0 - std::pow(beta2, s);
        const double step_size = lr / bc1, inv_sqrt_bc2 = 1.0 / std::sqrt(bc2), decay = 1.0 - lr * weight_decay;
        if (p[0].dtype == DType::f32)
          adam8_call<float>(p, g, mm, vv, ms, vs,
                            {float(beta1), float(beta2), float(1 - beta1), float(1 - beta2), float(step_size), float(inv_sqrt_bc2), float(eps),
                             float(decay), maximize});
        else
          adam8_call<double>(p, g, mm, vv, ms, vs, {beta1, beta2, 1 - beta1, 1 - beta2, step_size, inv_sqrt_bc2, eps, decay, maximize});
      },
      py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("exp_avg_scales"),
      py::arg("exp_avg_sq_scales"), py::arg("labels") = py::none(), py::kw_only(), py::arg("lr"), py::arg("beta1"),
      py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("step"), py::arg("maximize") = false,
      "AdamW step with 8-bit blockwise moments, in place (see slimgrad.optim.AdamW8bit).");

  m.def(
      "quantize_moment",
      [](py::handle x, py::handle codes, py::handle scales) {
        const Array xa = check_array(x, "x", {DType::f32}, Access::read);
        const auto shape = xa.shape();
        const Array ca = check_array(codes, "codes", {DType::i8, DType::u8}, Access::write, &shape);
        const auto bs = blocks_shape(xa.size());
        const Array sa = check_array(scales, "scales", {DType::f32}, Access::write, &bs);
        py::gil_scoped_release release;
        quantize_moment(xa.ptr<float>(), ca.mut<void>(), sa.mut<float>(), xa.size(), ca.dtype == DType::i8);
      },
      py::arg("x"), py::arg("codes"), py::arg("scales"),
      "Blockwise 8-bit codes of x: int8 codes = signed map, uint8 = unsigned map (x >= 0).");
  m.def(
      "dequantize_moment",
      [](py::handle codes, py::handle scales, py::handle x) {
        const Array ca = check_array(codes, "codes", {DType::i8, DType::u8}, Access::read);
        const auto bs = blocks_shape(ca.size());
        const Array sa = check_array(scales, "scales", {DType::f32}, Access::read, &bs);
        const auto shape = ca.shape();
        const Array xa = check_array(x, "x", {DType::f32}, Access::write, &shape);
        py::gil_scoped_release release;
        dequantize_moment(ca.ptr<void>(), sa.ptr<float>(), xa.mut<float>(), xa.size(), ca.dtype == DType::i8);
      },
      py::arg("codes"), py::arg("scales"), py::arg("x"), "Inverse of quantize_moment, into x.");
}

// ------------------------------------------------------------- Adafactor
void bind_adafactor(py::module_& m) {
  m.def(
      "adafactor_step",
      [](py::handle param, py::handle grad, py::handle row_var, py::handle col_var, py::handle variance,
         const std::string& label, double lr, double rho, double eps1, double eps2, double d, double weight_decay,
         double beta2_weight, bool maximize) {
        const Array p = check_array(param, "params" + label, {DType::f32, DType::f64}, Access::write);
        const Array g = check_like(grad, "grads" + label, p, Access::read);
        const auto shape = p.shape();
        const bool factored = shape.size() >= 2;
        std::size_t batch = p.size(), rows = 0, cols = 0;
        Array rv, cv, var;
        if (factored) {
          rows = static_cast<std::size_t>(shape[shape.size() - 2]);
          cols = static_cast<std::size_t>(shape.back());
          batch = 1;
          for (std::size_t i = 0; i + 2 < shape.size(); ++i) batch *= static_cast<std::size_t>(shape[i]);
          auto rs = shape, cs = shape;
          rs.back() = 1;
          cs[cs.size() - 2] = 1;
          rv = check_array(row_var, "row_var" + label, {p.dtype}, Access::write, &rs);
          cv = check_array(col_var, "col_var" + label, {p.dtype}, Access::write, &cs);
        } else {
          var = check_like(variance, "variance" + label, p, Access::write);
        }
        {
          const std::vector<Array> w{p, rv, cv, var}, r{g};  // unused ones are empty: no bytes
          check_no_overlap({&w}, {&r});
        }
        for (auto [name, x] : {std::pair{"lr", lr}, {"rho", rho}, {"eps1", eps1}, {"eps2", eps2}, {"d", d},
                               {"weight_decay", weight_decay}, {"beta2_weight", beta2_weight}})
          check_finite_scalar(name, x);
        const AdafactorArgs a{lr, rho, eps1, eps2, d, weight_decay, beta2_weight, maximize};
        py::gil_scoped_release release;
        if (p.size() == 0) return;
        if (p.dtype == DType::f32)
          adafactor_step<float>(p.mut<float>(), g.ptr<float>(), factored ? rv.mut<float>() : nullptr,
                                factored ? cv.mut<float>() : nullptr, factored ? nullptr : var.mut<float>(), batch,
                                rows, cols, factored, a);
        else
          adafactor_step<double>(p.mut<double>(), g.ptr<double>(), factored ? rv.mut<double>() : nullptr,
                                 factored ? cv.mut<double>() : nullptr, factored ? nullptr : var.mut<double>(), batch,
                                 rows, cols, factored, a);
      },
      py::arg("param"), py::arg("grad"), py::arg("row_var"), py::arg("col_var"), py::arg("variance"),
      py::arg("label") = "", py::kw_only(), py::arg("lr"), py::arg("rho"), py::arg("eps1"), py::arg("eps2"),
      py::arg("d"), py::arg("weight_decay"), py::arg("beta2_weight"), py::arg("maximize") = false,
      "One torch.optim.Adafactor step of one array in place (factored for ndim >= 2).");
}

// ------------------------------------------------------ clip / accumulate
// The `grads` argument: a list of float32 or float64 arrays of one dtype.
std::vector<Array> checked_grads(py::handle grads, py::handle labels, Access access) {
  const auto lab = label_list(labels, as_list(grads, "grads").size());
  return check_first(grads, "grads", lab, {DType::f32, DType::f64}, access);
}

// kernel(arrays, sizes, count, value) on checked arrays of one dtype T, in
// place, without the GIL; value converted to T (float or double).
template <class Kernel> void each_in_place(const std::vector<Array>& a, double value, Kernel kernel) {
  if (a.empty()) return;
  const auto n = sizes_of(a);
  py::gil_scoped_release release;
  if (a[0].dtype == DType::f32)
    kernel(ptrs<float>(a).data(), n.data(), n.size(), static_cast<float>(value));
  else
    kernel(ptrs<double>(a).data(), n.data(), n.size(), value);
}

void bind_grad_utils(py::module_& m) {
  m.def(
      "clip_grad_norm",
      [](py::handle grads, py::handle labels, double max_norm, double norm_type, bool apply) {
        const auto g = checked_grads(grads, labels, apply ? Access::write : Access::read);
        if (!(norm_type > 0.0)) throw py::value_error("norm_type: expected a number > 0 or inf, got " + std::to_string(norm_type));
        if (std::isnan(max_norm)) throw py::value_error("max_norm: expected a number, got nan");
        if (g.empty()) return 0.0;
        const auto n = sizes_of(g);
        py::gil_scoped_release release;
        if (g[0].dtype == DType::f32) {
          const auto gp = ptrs<float>(g);
          std::vector<const float*> gc(gp.begin(), gp.end());
          const double total = total_norm<float>(gc.data(), n.data(), n.size(), norm_type);
          if (apply) {
            // torch's arithmetic, in the gradients' dtype.
            // NaN (a NaN norm, or inf / inf) propagates, as torch.clamp does.
            const float c = static_cast<float>(max_norm) / (static_cast<float>(total) + 1e-6f);
            const float coef = (c < 1.0f || std::isnan(c)) ? c : 1.0f;
            if (!(coef == 1.0f)) scale_all<float>(gp.data(), n.data(), n.size(), coef);
          }
          return total;
        }
        const auto gp = ptrs<double>(g);
        std::vector<const double*> gc(gp.begin(), gp.end());
        const double total = total_norm<double>(gc.data(), n.data(), n.size(), norm_type);
        if (apply) {
          const double c = max_norm / (total + 1e-6);
          const double coef = (c < 1.0 || std::isnan(c)) ? c : 1.0;
          if (!(coef == 1.0)) scale_all<double>(gp.data(), n.data(), n.size(), coef);
        }
        return total;
      },
      py::arg("grads"), py::arg("labels") = py::none(), py::kw_only(), py::arg("max_norm"),
      py::arg("norm_type") = 2.0, py::arg("apply") = true,
      "Total norm of a list of gradients (fixed order) and, if apply, torch's clipping in place.");
  m.def(
      "grads_scale",
      [](py::handle grads, py::handle labels, double s) {
        each_in_place(checked_grads(grads, labels, Access::write), s,
                      [](auto* const* x, const std::size_t* n, std::size_t k, auto v) { scale_all(x, n, k, v); });
      },
      py::arg("grads"), py::arg("labels") = py::none(), py::kw_only(), py::arg("scale"),
      "grads *= scale for a list of arrays, in place.");
  m.def(
      "clip_grad_value",
      [](py::handle grads, py::handle labels, double clip_value) {
        const auto g = checked_grads(grads, labels, Access::write);
        if (!(clip_value >= 0.0))
          throw py::value_error("clip_value: expected a number >= 0, got " + std::to_string(clip_value));
        each_in_place(g, clip_value,
                      [](auto* const* x, const std::size_t* n, std::size_t k, auto c) { clamp_all(x, n, k, c); });
      },
      py::arg("grads"), py::arg("labels") = py::none(), py::kw_only(), py::arg("clip_value"),
      "Clamp every gradient to [-clip_value, clip_value] in place (NaN stays NaN).");
  m.def(
      "accumulate",
      [](py::handle acc, py::handle grads, py::handle labels, double scale) {
        const auto lab = label_list(labels, as_list(acc, "acc").size());
        const auto a = check_first(acc, "acc", lab, {DType::f32, DType::f64}, Access::write);
        const auto g = check_list_like(grads, "grads", lab, a, Access::read);
        check_finite_scalar("scale", scale);
        if (a.empty()) return;
        const auto n = sizes_of(a);
        py::gil_scoped_release release;
        if (a[0].dtype == DType::f32) {
          const auto gp = ptrs<float>(g);
          std::vector<const float*> gc(gp.begin(), gp.end());
          accumulate_all<float>(ptrs<float>(a).data(), gc.data(), n.data(), n.size(), static_cast<float>(scale));
        } else {
          const auto gp = ptrs<double>(g);
          std::vector<const double*> gc(gp.begin(), gp.end());
          accumulate_all<double>(ptrs<double>(a).data(), gc.data(), n.data(), n.size(), scale);
        }
      },
      py::arg("acc"), py::arg("grads"), py::arg("labels") = py::none(), py::kw_only(), py::arg("scale") = 1.0,
      "acc += scale * grads for lists of arrays, in place.");
}

}  // namespace

void register_optim_extra(py::module_& m) {
  bind_all(m, {bind_lamb, bind_adamw8bit, bind_adafactor, bind_grad_utils});
}

}  // namespace slimgrad::bind
