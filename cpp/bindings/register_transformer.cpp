// Bindings of the transformer and calibration kernels (slimgrad._core.nn):
// LayerNorm forward/backward, masked softmax forward/backward, the fused
// Hessian accumulation. Every argument is checked (check_array: dtype,
// contiguity, shape, writability) before any memory is touched; the GIL is
// released for the work.
#include <optional>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "outputs.hpp"
#include "slimgrad/transformer.hpp"

namespace slimgrad::bind {
namespace {

const std::initializer_list<DType> kF32 = {DType::f32};

std::vector<py::ssize_t> leading(const Array& x) {
  auto s = x.shape();
  s.pop_back();
  return s;
}

std::optional<Array> optional_vec(py::handle obj, const std::string& name, std::size_t n, Access access) {
  if (obj.is_none()) return std::nullopt;
  const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(n)};
  return check_array(obj, name, {DType::f32}, access, &shape);
}

const float* cptr(const std::optional<Array>& a) { return a ? a->ptr<float>() : nullptr; }
float* mptr(const std::optional<Array>& a) { return a ? a->mut<float>() : nullptr; }

Array rows_input(py::handle x, const std::string& name, std::size_t min_ndim) {
  Array xa = check_array(x, name, kF32, Access::read);
  if (static_cast<std::size_t>(xa.ndim()) < min_ndim)
    throw py::value_error(name + ": expected at least " + std::to_string(min_ndim) + " dimensions, got " +
                          describe(xa.arr));
  return xa;
}

void bind_layer_norm(py::module_& m) {
  m.def("layer_norm_forward", [](py::handle x, py::handle y, py::handle weight, py::handle bias, py::handle mean,
                                 py::handle rstd, double eps) {
    const Array xa = rows_input(x, "x", 1);
    const Array ya = check_like(y, "out", xa, Access::write);
    const std::size_t n = static_cast<std::size_t>(xa.dim(xa.ndim() - 1)), rows = n ? xa.size() / n : 0;
    const auto wa = optional_vec(weight, "weight", n, Access::read);
    const auto ba = optional_vec(bias, "bias", n, Access::read);
    const auto lead = leading(xa);
    const Array ma = check_array(mean, "mean", kF32, Access::write, &lead);
    const Array ra = check_array(rstd, "rstd", kF32, Access::write, &lead);
    if (!(eps >= 0.0)) throw py::value_error("eps: expected a number >= 0, got " + std::to_string(eps));
    py::gil_scoped_release release;
    layer_norm_forward(xa.ptr<float>(), ya.mut<float>(), rows, n, cptr(wa), cptr(ba), static_cast<float>(eps),
                       ma.mut<float>(), ra.mut<float>());
  }, py::arg("x"), py::arg("out"), py::arg("weight"), py::arg("bias"), py::arg("mean"), py::arg("rstd"),
     py::arg("eps"));

  m.def("layer_norm_backward", [](py::handle x, py::handle dy, py::handle dx, py::handle weight, py::handle mean,
                                  py::handle rstd, py::handle grad_weight, py::handle grad_bias) {
    const Array xa = rows_input(x, "x", 1);
    const Array ga = check_like(dy, "grad_out", xa, Access::read);
    const Array da = check_like(dx, "grad_in", xa, Access::write);
    const std::size_t n = static_cast<std::size_t>(xa.dim(xa.ndim() - 1)), rows = n ? xa.size() / n : 0;
    const auto wa = optional_vec(weight, "weight", n, Access::read);
    const auto lead = leading(xa);
    const Array ma = check_array(mean, "mean", kF32, Access::read, &lead);
    const Array ra = check_array(rstd, "rstd", kF32, Access::read, &lead);
    const auto gw = optional_vec(grad_weight, "grad_weight", n, Access::write);
    const auto gb = optional_vec(grad_bias, "grad_bias", n, Access::write);
    py::gil_scoped_release release;
    layer_norm_backward(xa.ptr<float>(), ga.ptr<float>(), da.mut<float>(), rows, n, cptr(wa), ma.ptr<float>(),
                        ra.ptr<float>(), mptr(gw), mptr(gb));
  }, py::arg("x"), py::arg("grad_out"), py::arg("grad_in"), py::arg("weight"), py::arg("mean"), py::arg("rstd"),
     py::arg("grad_weight"), py::arg("grad_bias"));
}

void bind_softmax(py::module_& m) {
  m.def("masked_softmax_forward", [](py::handle scores, py::handle out, py::handle keep, double scale) {
    const Array sa = rows_input(scores, "scores", 2);
    const Array oa = check_like(out, "out", sa, Access::write);
    const std::size_t batch = static_cast<std::size_t>(sa.dim(0));
    const std::size_t n = static_cast<std::size_t>(sa.dim(sa.ndim() - 1));
    const std::size_t group = batch && n ? sa.size() / (batch * n) : 0;
    std::optional<Array> ka;
    if (!keep.is_none()) {
      const std::vector<py::ssize_t> kshape{sa.dim(0), sa.dim(sa.ndim() - 1)};
      ka = check_array(keep, "key_mask", {DType::boolean, DType::u8}, Access::read, &kshape);
    }
    py::gil_scoped_release release;
    masked_softmax_forward(sa.ptr<float>(), oa.mut<float>(), batch, group, n,
                           ka ? ka->ptr<std::uint8_t>() : nullptr, static_cast<float>(scale));
  }, py::arg("scores"), py::arg("out"), py::arg("key_mask"), py::arg("scale"));

  m.def("masked_softmax_backward", [](py::handle p, py::handle dp, py::handle ds, double scale) {
    const Array pa = rows_input(p, "probs", 1);
    const Array ga = check_like(dp, "grad_out", pa, Access::read);
    const Array da = check_like(ds, "grad_in", pa, Access::write);
    const std::size_t n = static_cast<std::size_t>(pa.dim(pa.ndim() - 1)), rows = n ? pa.size() / n : 0;
    py::gil_scoped_release release;
    masked_softmax_backward(pa.ptr<float>(), ga.ptr<float>(), da.mut<float>(), rows, n, static_cast<float>(scale));
  }, py::arg("probs"), py::arg("grad_out"), py::arg("grad_in"), py::arg("scale"));
}

// (batch, seq, heads * d) float32, C order: the projections of attention.
Array projections(py::handle x, const std::string& name, std::size_t heads) {
  Array xa = check_array(x, name, kF32, Access::read);
  if (xa.ndim() != 3)
    throw py::value_error(name + ": expected a 3-D (batch, seq, heads * head_dim) array, got " + describe(xa.arr));
  if (heads == 0 || xa.dim(2) % static_cast<py::ssize_t>(heads) != 0)
    throw py::value_error(name + ": expected a last dimension divisible by heads = " + std::to_string(heads) +
                          ", got " + describe(xa.arr));
  return xa;
}

void bind_attention(py::module_& m) {
  m.def("attention_scores", [](py::handle a, py::handle c, std::size_t heads) {
    const Array aa = projections(a, "a", heads);
    const Array ca = check_like(c, "c", aa, Access::read);
    const auto batch = static_cast<std::size_t>(aa.dim(0)), seq = static_cast<std::size_t>(aa.dim(1));
    const std::size_t d = static_cast<std::size_t>(aa.dim(2)) / heads;
    const std::vector<py::ssize_t> shape{aa.dim(0), static_cast<py::ssize_t>(heads), aa.dim(1), aa.dim(1)};
    py::array out = new_output(py::dtype("float32"), shape);
    auto* op = static_cast<float*>(out.mutable_data());
    {
      py::gil_scoped_release release;
      attention_scores(aa.ptr<float>(), ca.ptr<float>(), batch, seq, heads, d, op);
    }
    return out;
  }, py::arg("a"), py::arg("c"), py::arg("heads"),
     "scores (batch, heads, seq, seq) = a_h c_h^T per head, a and c (batch, seq, heads * d); new array.");

  m.def("attention_context", [](py::handle p, py::handle v, bool transpose) {
    const Array pa = check_array(p, "p", kF32, Access::read);
    if (pa.ndim() != 4 || pa.dim(2) != pa.dim(3))
      throw py::value_error("p: expected a 4-D (batch, heads, seq, seq) array, got " + describe(pa.arr));
    const auto heads = static_cast<std::size_t>(pa.dim(1));
    const Array va = projections(v, "v", heads);
    if (va.dim(0) != pa.dim(0) || va.dim(1) != pa.dim(2))
      throw py::value_error("v: expected shape (" + std::to_string(pa.dim(0)) + ", " + std::to_string(pa.dim(2)) +
                            ", heads * d) for p of shape " + shape_str(pa.shape()) + ", got " + describe(va.arr));
    const auto batch = static_cast<std::size_t>(va.dim(0)), seq = static_cast<std::size_t>(va.dim(1));
    const std::size_t d = static_cast<std::size_t>(va.dim(2)) / heads;
    py::array out = new_output(py::dtype("float32"), va.shape());
    auto* op = static_cast<float*>(out.mutable_data());
    {
      py::gil_scoped_release release;
      attention_context(pa.ptr<float>(), transpose, va.ptr<float>(), batch, seq, heads, d, op);
    }
    return out;
  }, py::arg("p"), py::arg("v"), py::arg("transpose") = false,
     "out (batch, seq, heads * d), head h = p_h v_h (p_h^T v_h if transpose), p (batch, heads, seq, seq); new array.");
}

void bind_hessian(py::module_& m) {
  m.def("hessian_accumulate", [](py::handle x, py::handle h, py::handle abs_sum, py::handle sq_sum) {
    const Array xa = check_array(x, "x", kF32, Access::read);
    if (xa.ndim() != 2) throw py::value_error("x: expected a 2-D (tokens, features) array, got " + describe(xa.arr));
    const std::size_t n = static_cast<std::size_t>(xa.dim(0)), d = static_cast<std::size_t>(xa.dim(1));
    const std::vector<py::ssize_t> hshape{xa.dim(1), xa.dim(1)}, dshape{xa.dim(1)};
    const Array ha = check_array(h, "hessian", {DType::f32, DType::f64}, Access::write, &hshape);
    std::optional<Array> aa, qa;
    if (!abs_sum.is_none()) aa = check_array(abs_sum, "abs_sum", {DType::f64}, Access::write, &dshape);
    if (!sq_sum.is_none()) qa = check_array(sq_sum, "sq_sum", {DType::f64}, Access::write, &dshape);
    double* ap = aa ? aa->mut<double>() : nullptr;
    double* qp = qa ? qa->mut<double>() : nullptr;
    py::gil_scoped_release release;
    if (ha.dtype == DType::f32)
      hessian_accumulate(xa.ptr<float>(), n, d, ha.mut<float>(), ap, qp);
    else
      hessian_accumulate(xa.ptr<float>(), n, d, ha.mut<double>(), ap, qp);
  }, py::arg("x"), py::arg("hessian"), py::arg("abs_sum"), py::arg("sq_sum"));

  m.def("hessian_inner", [](py::handle x, py::handle h) {
    const Array xa = check_array(x, "x", kF32, Access::read);
    if (xa.ndim() != 2) throw py::value_error("x: expected a 2-D (rows, features) array, got " + describe(xa.arr));
    const std::size_t n = static_cast<std::size_t>(xa.dim(0)), d = static_cast<std::size_t>(xa.dim(1));
    const std::vector<py::ssize_t> hshape{xa.dim(1), xa.dim(1)};
    const Array ha = check_array(h, "hessian", {DType::f64}, Access::read, &hshape);
    py::gil_scoped_release release;
    return hessian_inner(xa.ptr<float>(), n, d, ha.ptr<double>());
  }, py::arg("x"), py::arg("hessian"));
}

}  // namespace

void register_transformer(py::module_& m) {
  bind_layer_norm(m);
  bind_softmax(m);
  bind_attention(m);
  bind_hessian(m);
}

}  // namespace slimgrad::bind
