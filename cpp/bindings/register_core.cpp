// Bindings of the runtime (ISA, threads, build info) and the core kernels.
#include <stdexcept>

#include "buffers.hpp"
#include "outputs.hpp"
#include "slimgrad/core.hpp"
#include "slimgrad/isa.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad::bind {
namespace {

Isa isa_arg(const std::string& name) {
  const auto isa = parse_isa(name);
  if (!isa) throw py::value_error("isa: expected one of " + isa_names("'") + ", got '" + name + "'");
  return *isa;
}

void bind_runtime(py::module_& m) {
  m.def("available_isas", [] {
    py::list out;
    for (Isa i : kIsaLevels)
      if (isa_supported(i)) out.append(isa_name(i));
    return out;
  });
  m.def("built_isas", [] {
    py::list out;
    for (Isa i : kIsaLevels)
      if (isa_built(i)) out.append(isa_name(i));
    return out;
  });
  m.def("best_isa", [] { return isa_name(best_isa()); });
  m.def("active_isa", [] { return isa_name(active_isa()); });
  m.def("set_active_isa", [](const std::string& name) {
    try {
      set_active_isa(isa_arg(name));
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
  }, py::arg("isa"));
  m.def("get_num_threads", &get_num_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("n: expected a thread count >= 1, got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"));
  m.def("openmp_enabled", &openmp_enabled);
  // Output arrays (outputs.hpp): numpy.empty through the cache of freed blocks.
  m.def("empty", [](const py::tuple& shape, const py::object& dtype) {
    std::vector<py::ssize_t> dims;
    for (const py::handle d : shape) {
      dims.push_back(d.cast<py::ssize_t>());
      if (dims.back() < 0) throw py::value_error("shape: expected sizes >= 0, got " + std::to_string(dims.back()));
    }
    return new_output(py::dtype::from_args(dtype), dims);
  }, py::arg("shape"), py::arg("dtype"));
  m.def("cached_output_bytes", &cached_output_bytes);
  m.def("release_cached_outputs", &release_cached_outputs);
  m.attr("compiler") = SLIMGRAD_COMPILER;
}

// m.def(name)(x) for a kernel reading one float32 or float64 array x: checked
// with the GIL held, run without it; `kernel(const T*, n)` for both T.
template <class Kernel> void def_reduction(py::module_& m, const char* name, Kernel kernel) {
  m.def(name, [kernel](py::handle x) {
    const Array xa = check_array(x, "x", {DType::f32, DType::f64}, Access::read);
    py::gil_scoped_release release;
    return xa.dtype == DType::f32 ? kernel(xa.ptr<float>(), xa.size()) : kernel(xa.ptr<double>(), xa.size());
  }, py::arg("x"));
}

// One float32/float64 kernel call: checks x (and y) and releases the GIL for the work.
void bind_kernels(py::module_& m) {
  m.def("axpy_", [](py::handle y, py::handle x, double alpha) {
    const Array ya = check_array(y, "y", {DType::f32, DType::f64}, Access::write);
    const Array xa = check_like(x, "x", ya, Access::read);
    check_same_or_disjoint(ya, {&xa});  // y += alpha * y is fine, a shifted view is not
    py::gil_scoped_release release;  // both arrays are held by ya/xa for the call
    if (ya.dtype == DType::f32)
      axpy(ya.mut<float>(), xa.ptr<float>(), static_cast<float>(alpha), ya.size());
    else
      axpy(ya.mut<double>(), xa.ptr<double>(), alpha, ya.size());
  }, py::arg("y"), py::arg("x"), py::arg("alpha"));

  def_reduction(m, "squared_norm", [](const auto* x, std::size_t n) { return squared_norm(x, n); });
  def_reduction(m, "find_nonfinite", [](const auto* x, std::size_t n) { return find_nonfinite(x, n); });

  // widen_half(x) -> a new float32 array of x's shape: x (float16 or
  // bfloat16, any C-contiguous shape) widened exactly.
  m.def("widen_half", [](py::handle x) {
    const Array xa = check_array(x, "x", {DType::f16, DType::bf16}, Access::read);
    py::array y = new_output(py::dtype("float32"), xa.shape());
    {
      py::gil_scoped_release release;
      widen_half(xa.ptr<std::uint16_t>(), static_cast<float*>(y.mutable_data()), xa.size(), xa.dtype == DType::bf16);
    }
    return y;
  }, py::arg("x"));

  // narrow_half(x, bf16) -> a new uint16 array of x's shape: the float16
  // (bf16=False) or bfloat16 bits of x (float32, any C-contiguous shape),
  // rounded to nearest even.
  m.def("narrow_half", [](py::handle x, bool bf16) {
    const Array xa = check_array(x, "x", {DType::f32}, Access::read);
    py::array y = new_output(py::dtype("uint16"), xa.shape());
    {
      py::gil_scoped_release release;
      narrow_half(xa.ptr<float>(), static_cast<std::uint16_t*>(y.mutable_data()), xa.size(), bf16);
    }
    return y;
  }, py::arg("x"), py::arg("bf16"));

  m.def("stream_probe", [](py::handle p, py::handle g, py::handle mm, py::handle v) {
    const Array pa = check_array(p, "p", {DType::f32}, Access::write);
    const Array ga = check_like(g, "g", pa, Access::read);
    const Array ma = check_like(mm, "m", pa, Access::write);
    const Array va = check_like(v, "v", pa, Access::write);
    check_disjoint(pa, {&ga, &ma, &va});
    check_disjoint(ma, {&ga, &va});
    check_disjoint(va, {&ga});
    py::gil_scoped_release release;
    stream_probe(pa.mut<float>(), ga.ptr<float>(), ma.mut<float>(), va.mut<float>(), pa.size());
  }, py::arg("p"), py::arg("g"), py::arg("m"), py::arg("v"));
}

}  // namespace

void register_core(py::module_& m) {
  try {
    init_isa_from_env();
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  cached_output_bytes();  // reads SLIMGRAD_OUTPUT_CACHE_MB now: a bad value fails the import, not a kernel call
  bind_runtime(m);
  bind_kernels(m);
}

}  // namespace slimgrad::bind
