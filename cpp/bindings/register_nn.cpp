// Bindings of the nn kernels (slimgrad._core.nn): Dropout, BatchNorm
// forward/backward, GELU and the Philox generator. Every argument is checked
// (check_array: dtype, contiguity, shape, writability) before any memory is
// touched; the GIL is released for the work, which is safe because the
// checked Array objects hold references to every buffer for the call.
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "buffers.hpp"
#include "slimgrad/nn.hpp"
#include "slimgrad/philox.hpp"

namespace slimgrad::bind {
namespace {

const std::initializer_list<DType> kFloat = {DType::f32, DType::f64};

// (n, c, l) of a 2-D (n, c) or 3-D (n, c, l) batch-norm input.
BnShape bn_shape(const Array& x) {
  if (x.ndim() != 2 && x.ndim() != 3)
    throw py::value_error(x.name + ": expected a 2-D (N, C) or 3-D (N, C, L) array, got " + describe(x.arr));
  return {static_cast<std::size_t>(x.dim(0)), static_cast<std::size_t>(x.dim(1)),
          x.ndim() == 3 ? static_cast<std::size_t>(x.dim(2)) : 1};
}

// An optional per-channel array: None, or shape (c,) with x's dtype.
// (std::optional, not an empty Array: a default py::array is a real, empty
// array, not a null handle.)
std::optional<Array> optional_channel(py::handle obj, const std::string& name, const Array& x, std::size_t c,
                                      Access access) {
  if (obj.is_none()) return std::nullopt;
  const std::vector<py::ssize_t> shape{static_cast<py::ssize_t>(c)};
  return check_array(obj, name, {x.dtype}, access, &shape);
}

template <class T>
T* opt_mut(const std::optional<Array>& a) {
  return a ? a->mut<T>() : nullptr;
}
template <class T>
const T* opt_ptr(const std::optional<Array>& a) {
  return a ? a->ptr<T>() : nullptr;
}

bool tanh_arg(const std::string& approximate) {
  if (approximate == "none") return false;
  if (approximate == "tanh") return true;
  throw py::value_error("approximate: expected 'none' or 'tanh', got '" + approximate + "'");
}

void bind_dropout(py::module_& m) {
  m.def("dropout", [](py::handle x, py::handle out, double p, std::uint64_t seed, std::uint64_t stream) {
    const Array xa = check_array(x, "x", kFloat, Access::read);
    const Array oa = check_like(out, "out", xa, Access::write);
    check_same_or_disjoint(oa, {&xa});
    dropout_threshold(p);  // std::invalid_argument (ValueError) before any write
    py::gil_scoped_release release;
    if (xa.dtype == DType::f32)
      dropout(xa.ptr<float>(), oa.mut<float>(), xa.size(), p, seed, stream);
    else
      dropout(xa.ptr<double>(), oa.mut<double>(), xa.size(), p, seed, stream);
  }, py::arg("x"), py::arg("out"), py::arg("p"), py::arg("seed"), py::arg("stream"));
}

void bind_batch_norm(py::module_& m) {
  m.def("batch_norm_forward", [](py::handle x, py::handle y, py::handle weight, py::handle bias,
                                 py::handle running_mean, py::handle running_var, py::handle save_mean,
                                 py::handle save_invstd, bool training, double momentum, double eps) {
    const Array xa = check_array(x, "x", kFloat, Access::read);
    const BnShape s = bn_shape(xa);
    const Array ya = check_like(y, "y", xa, Access::write);
    const auto wa = optional_channel(weight, "weight", xa, s.c, Access::read);
    const auto ba = optional_channel(bias, "bias", xa, s.c, Access::read);
    const Access stats_access = training ? Access::write : Access::read;
    const auto rm = optional_channel(running_mean, "running_mean", xa, s.c, stats_access);
    const auto rv = optional_channel(running_var, "running_var", xa, s.c, stats_access);
    if (rm.has_value() != rv.has_value())
      throw py::value_error("running_mean, running_var: expected both arrays or both None");
    if (!training && !rm)
      throw py::value_error("running_mean: expected an array in eval mode (training=False), got None");
    const std::vector<py::ssize_t> cshape{static_cast<py::ssize_t>(s.c)};
    const Array sm = check_array(save_mean, "save_mean", {DType::f64}, Access::write, &cshape);
    const Array si = check_array(save_invstd, "save_invstd", {DType::f64}, Access::write, &cshape);
    check_disjoint(ya, {&xa});
    for (const auto* o : {&ya, &sm, &si}) {  // outputs: no byte shared with any other argument
      for (const auto* a : {&xa, &ya, &sm, &si})
        if (a != o) check_disjoint(*o, {a});
      for (const auto* a : {&wa, &ba, &rm, &rv})
        if (*a) check_disjoint(*o, {&**a});
    }
    for (const auto* r : {&rm, &rv})  // running stats are written when training
      if (*r && training) {
        check_disjoint(**r, {&xa});
        for (const auto* a : {&wa, &ba, &rm, &rv})
          if (*a && a != r) check_disjoint(**r, {&**a});
      }
    if (!(eps > 0.0)) throw py::value_error("eps: expected a positive number, got " + std::string(py::repr(py::float_(eps))));
    if (training && rv && s.n * s.l == 1)
      throw py::value_error("x: expected more than 1 value per channel when training, got " + describe(xa.arr));
    py::gil_scoped_release release;
    auto run = [&](auto tag) {
      using T = decltype(tag);
      if (training)
        batch_norm_forward_train(xa.ptr<T>(), ya.mut<T>(), s, opt_ptr<T>(wa), opt_ptr<T>(ba), eps, opt_mut<T>(rm),
                                 opt_mut<T>(rv), momentum, sm.mut<double>(), si.mut<double>());
      else
        batch_norm_forward_eval(xa.ptr<T>(), ya.mut<T>(), s, opt_ptr<T>(wa), opt_ptr<T>(ba), eps, rm->ptr<T>(),
                                rv->ptr<T>(), sm.mut<double>(), si.mut<double>());
    };
    if (xa.dtype == DType::f32)
      run(float{});
    else
      run(double{});
  }, py::arg("x"), py::arg("y"), py::arg("weight"), py::arg("bias"), py::arg("running_mean"),
     py::arg("running_var"), py::arg("save_mean"), py::arg("save_invstd"), py::arg("training"),
     py::arg("momentum"), py::arg("eps"));

  m.def("batch_norm_backward", [](py::handle x, py::handle dy, py::handle dx, py::handle weight,
                                  py::handle save_mean, py::handle save_invstd, bool training,
                                  py::handle grad_weight, py::handle grad_bias) {
    const Array xa = check_array(x, "x", kFloat, Access::read);
    const BnShape s = bn_shape(xa);
    const Array ga = check_like(dy, "grad_out", xa, Access::read);
    const Array da = check_like(dx, "grad_in", xa, Access::write);
    const auto wa = optional_channel(weight, "weight", xa, s.c, Access::read);
    const std::vector<py::ssize_t> cshape{static_cast<py::ssize_t>(s.c)};
    const Array sm = check_array(save_mean, "save_mean", {DType::f64}, Access::read, &cshape);
    const Array si = check_array(save_invstd, "save_invstd", {DType::f64}, Access::read, &cshape);
    const auto gw = optional_channel(grad_weight, "grad_weight", xa, s.c, Access::write);
    const auto gb = optional_channel(grad_bias, "grad_bias", xa, s.c, Access::write);
    check_disjoint(da, {&xa, &ga, &sm, &si});
    if (wa) check_disjoint(da, {&*wa});
    for (const auto* g : {&gw, &gb})
      if (*g) {
        check_disjoint(**g, {&xa, &ga, &da, &sm, &si});
        if (wa) check_disjoint(**g, {&*wa});
      }
    if (gw && gb) check_disjoint(*gw, {&*gb});
    py::gil_scoped_release release;
    auto run = [&](auto tag) {
      using T = decltype(tag);
      batch_norm_backward(xa.ptr<T>(), ga.ptr<T>(), da.mut<T>(), s, opt_ptr<T>(wa), sm.ptr<double>(),
                          si.ptr<double>(), training, opt_mut<T>(gw), opt_mut<T>(gb));
    };
    if (xa.dtype == DType::f32)
      run(float{});
    else
      run(double{});
  }, py::arg("x"), py::arg("grad_out"), py::arg("grad_in"), py::arg("weight"), py::arg("save_mean"),
     py::arg("save_invstd"), py::arg("training"), py::arg("grad_weight"), py::arg("grad_bias"));
}

void bind_gelu(py::module_& m) {
  m.def("gelu_forward", [](py::handle x, py::handle y, const std::string& approximate) {
    const Array xa = check_array(x, "x", kFloat, Access::read);
    const Array ya = check_like(y, "out", xa, Access::write);
    check_same_or_disjoint(ya, {&xa});
    const bool t = tanh_arg(approximate);
    py::gil_scoped_release release;
    if (xa.dtype == DType::f32)
      gelu_forward(xa.ptr<float>(), ya.mut<float>(), xa.size(), t);
    else
      gelu_forward(xa.ptr<double>(), ya.mut<double>(), xa.size(), t);
  }, py::arg("x"), py::arg("out"), py::arg("approximate"));

  m.def("gelu_backward", [](py::handle x, py::handle dy, py::handle dx, const std::string& approximate) {
    const Array xa = check_array(x, "x", kFloat, Access::read);
    const Array ga = check_like(dy, "grad_out", xa, Access::read);
    const Array da = check_like(dx, "grad_in", xa, Access::write);
    check_same_or_disjoint(da, {&xa, &ga});
    const bool t = tanh_arg(approximate);
    py::gil_scoped_release release;
    if (xa.dtype == DType::f32)
      gelu_backward(xa.ptr<float>(), ga.ptr<float>(), da.mut<float>(), xa.size(), t);
    else
      gelu_backward(xa.ptr<double>(), ga.ptr<double>(), da.mut<double>(), xa.size(), t);
  }, py::arg("x"), py::arg("grad_out"), py::arg("grad_in"), py::arg("approximate"));
}

void bind_philox(py::module_& m) {
  m.def("philox4x32", [](std::array<std::uint32_t, 4> counter, std::array<std::uint32_t, 2> key) {
    const philox::Block b = philox::philox4x32(counter.data(), key.data());
    return py::make_tuple(b.v[0], b.v[1], b.v[2], b.v[3]);
  }, py::arg("counter"), py::arg("key"));
  m.def("philox_bits", [](std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
    return philox::bits(seed, stream, index);
  }, py::arg("seed"), py::arg("stream"), py::arg("index"));
  m.def("philox_uniform", [](std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
    return philox::uniform(seed, stream, index);
  }, py::arg("seed"), py::arg("stream"), py::arg("index"));
  m.def("dropout_threshold", &dropout_threshold, py::arg("p"));
}

}  // namespace

void register_nn(py::module_& m) { bind_all(m, {bind_dropout, bind_batch_norm, bind_gelu, bind_philox}); }

}  // namespace slimgrad::bind
