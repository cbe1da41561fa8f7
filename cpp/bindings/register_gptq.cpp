// Bindings of GPTQ / SparseGPT (slimgrad._core.gptq). The Python layer
// (slimgrad.quant.gptq, slimgrad.prune.sparsegpt) validates user-facing
// arguments, checks for non-finite values and allocates the outputs; these
// functions re-check what guards memory (dtypes, shapes, option ranges)
// before releasing the GIL. Inputs are only read.
#include <stdexcept>
#include <string>

#include "buffers.hpp"
#include "slimgrad/gptq.hpp"

namespace slimgrad::bind {
namespace {

struct Layer {
  Array w, h;
  std::size_t rows, cols;
};

Layer check_layer(py::handle w, py::handle h) {
  Array wa = check_array(w, "w", {DType::f32}, Access::read);
  if (wa.ndim() != 2) throw py::value_error("w: expected a 2-d float32 array (out, in), got " + describe(w));
  const std::vector<py::ssize_t> hshape{wa.dim(1), wa.dim(1)};
  Array ha = check_array(h, "H", {DType::f64}, Access::read, &hshape);
  return {wa, ha, static_cast<std::size_t>(wa.dim(0)), static_cast<std::size_t>(wa.dim(1))};
}

void check_common(double damp, std::size_t block_size) {
  if (!(damp >= 0.0 && damp < 1e6)) throw py::value_error("damp: expected a number >= 0, got " + std::to_string(damp));
  if (block_size < 1) throw py::value_error("block_size: expected an int >= 1");
}

// std::domain_error (H not positive definite) reaches Python as ValueError.
template <class F>
double run(F&& f) {
  try {
    py::gil_scoped_release release;
    return f();
  } catch (const std::domain_error& e) {
    throw py::value_error(e.what());
  }
}

}  // namespace

void register_gptq(py::module_& m) {
  m.def("quantize", [](py::handle w, py::handle h, int bits, bool symmetric, std::size_t group_size, bool act_order,
                       double damp, std::size_t block_size, py::handle codes, py::handle scale,
                       py::handle zero_point) {
    const Layer l = check_layer(w, h);
    if (bits < 2 || bits > 8) throw py::value_error("bits: expected 2..8, got " + std::to_string(bits));
    check_common(damp, block_size);
    const std::size_t gs = group_size == 0 ? l.cols : group_size;
    const auto n_groups = static_cast<py::ssize_t>(l.cols == 0 ? 0 : (l.cols + gs - 1) / gs);
    const std::vector<py::ssize_t> cshape{static_cast<py::ssize_t>(l.rows), static_cast<py::ssize_t>(l.cols)};
    const std::vector<py::ssize_t> sshape{static_cast<py::ssize_t>(l.rows), n_groups};
    const Array ca = check_array(codes, "codes", {symmetric ? DType::i8 : DType::u8}, Access::write, &cshape);
    const Array sa = check_array(scale, "scale", {DType::f32}, Access::write, &sshape);
    const Array za = check_array(zero_point, "zero_point", {DType::i32}, Access::write, &sshape);
    gptq::QuantOptions o;
    o.bits = bits;
    o.symmetric = symmetric;
    o.group_size = group_size;
    o.act_order = act_order;
    o.damp = damp;
    o.block_size = block_size;
    return run([&] {
      return gptq::quantize(l.w.ptr<float>(), l.rows, l.cols, l.h.ptr<double>(), o, ca.mut<std::uint8_t>(),
                            sa.mut<float>(), za.mut<std::int32_t>());
    });
  }, py::arg("w"), py::arg("H"), py::arg("bits"), py::arg("symmetric"), py::arg("group_size"), py::arg("act_order"),
     py::arg("damp"), py::arg("block_size"), py::arg("codes"), py::arg("scale"), py::arg("zero_point"));

  m.def("prune", [](py::handle w, py::handle h, double sparsity, std::size_t n, std::size_t m_, double damp,
                    std::size_t block_size, py::handle out, py::handle keep) {
    const Layer l = check_layer(w, h);
    check_common(damp, block_size);
    if (m_ > 0) {
      if (n > m_) throw py::value_error("n, m: expected 0 <= n <= m");
      if (l.cols % m_ || block_size % m_)
        throw py::value_error("m: must divide the number of columns and block_size");
    } else if (!(sparsity >= 0.0 && sparsity <= 1.0)) {
      throw py::value_error("sparsity: expected a number in [0, 1], got " + std::to_string(sparsity));
    }
    const auto shape = l.w.shape();
    const Array oa = check_array(out, "out", {DType::f32}, Access::write, &shape);
    const Array ka = check_array(keep, "keep", {DType::boolean, DType::u8}, Access::write, &shape);
    gptq::PruneOptions o;
    o.sparsity = sparsity;
    o.n = n;
    o.m = m_;
    o.damp = damp;
    o.block_size = block_size;
    return run([&] {
      return gptq::prune(l.w.ptr<float>(), l.rows, l.cols, l.h.ptr<double>(), o, oa.mut<float>(),
                         ka.mut<std::uint8_t>());
    });
  }, py::arg("w"), py::arg("H"), py::arg("sparsity"), py::arg("n"), py::arg("m"), py::arg("damp"),
     py::arg("block_size"), py::arg("out"), py::arg("keep"));
}

}  // namespace slimgrad::bind
