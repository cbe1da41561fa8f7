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
  Array w, order, dead, s;
  std::size_t rows, cols;
  gptq::FactorRef factor() const { return {order.ptr<std::int64_t>(), dead.ptr<std::uint8_t>(), s.ptr<double>()}; }
};

// w (out, in) float32 and the factor of its Hessian: order (in,) int64, a
// permutation (checked: it indexes memory); dead (in,) bool; S (in, in) float64.
// order (cols,) int64, checked to be a permutation (it indexes memory).
Array check_order(py::handle order, py::ssize_t cols) {
  const std::vector<py::ssize_t> shape{cols};
  Array oa = check_array(order, "order", {DType::i64}, Access::read, &shape);
  std::vector<char> seen(static_cast<std::size_t>(cols), 0);
  for (py::ssize_t a = 0; a < cols; ++a) {
    const std::int64_t c = oa.ptr<std::int64_t>()[a];
    if (c < 0 || c >= cols || seen[static_cast<std::size_t>(c)]++)
      throw py::value_error("order: expected a permutation of 0.." + std::to_string(cols - 1));
  }
  return oa;
}

Layer check_layer(py::handle w, py::handle order, py::handle dead, py::handle s) {
  Array wa = check_array(w, "w", {DType::f32}, Access::read);
  if (wa.ndim() != 2) throw py::value_error("w: expected a 2-d float32 array (out, in), got " + describe(w));
  const std::vector<py::ssize_t> vshape{wa.dim(1)}, ushape{wa.dim(1), wa.dim(1)};
  Array oa = check_order(order, wa.dim(1));
  Array da = check_array(dead, "dead", {DType::boolean, DType::u8}, Access::read, &vshape);
  Array sa = check_array(s, "S", {DType::f64}, Access::read, &ushape);
  return {wa, oa, da, sa, static_cast<std::size_t>(wa.dim(0)), static_cast<std::size_t>(wa.dim(1))};
}

// A square float64 H (only read).
Array check_square(py::handle h, const char* name = "H") {
  Array ha = check_array(h, name, {DType::f64}, Access::read);
  if (ha.ndim() != 2 || ha.dim(0) != ha.dim(1))
    throw py::value_error(std::string(name) + ": expected a square array, got " + describe(h));
  return ha;
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
  m.def("factor", [](py::handle h, bool act_order, double damp) {
    const Array ha = check_square(h);
    check_common(damp, 1);
    const auto cols = static_cast<std::size_t>(ha.dim(0));
    gptq::Factor f;
    run([&] {
      f = gptq::factor(ha.ptr<double>(), cols, act_order, damp);
      return 0.0;
    });
    const auto n = static_cast<py::ssize_t>(cols);
    py::array_t<std::int64_t> order(n);
    py::array_t<bool> dead(n);
    py::array_t<double> s({n, n});
    std::copy(f.order.begin(), f.order.end(), order.mutable_data());
    std::copy(f.dead.begin(), f.dead.end(), dead.mutable_data());
    std::copy(f.s.begin(), f.s.end(), s.mutable_data());
    return py::make_tuple(order, dead, s);
  }, py::arg("H"), py::arg("act_order"), py::arg("damp"),
     "(order, dead, S): the factor of H in float64 through Eigen (gptq.hpp, factor).");

  m.def("top_rows", [](py::handle order, std::size_t cols, std::size_t group_size) {
    const Array oa = check_order(order, static_cast<py::ssize_t>(cols));
    return gptq::top_rows(oa.ptr<std::int64_t>(), cols, group_size);
  }, py::arg("order"), py::arg("cols"), py::arg("group_size"),
     "The rows of U = S^-1 GPTQ needs for this order and group size (gptq.hpp, top_rows).");

  m.def("inverse_top", [](py::handle s, std::size_t rows) {
    const Array sa = check_square(s, "S");
    const auto cols = static_cast<std::size_t>(sa.dim(0));
    if (rows > cols) throw py::value_error("rows: expected at most " + std::to_string(cols));
    py::array_t<double> top({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(cols)});
    double* out = top.mutable_data();
    run([&] {
      gptq::inverse_top(sa.ptr<double>(), cols, rows, out);
      return 0.0;
    });
    return top;
  }, py::arg("S"), py::arg("rows"), "U[:rows, :] for U = S^-1, S upper, through Eigen (gptq.hpp, inverse_top).");

  m.def("check_hessian", [](py::handle h, double rtol, double atol_scale) {
    const Array ha = check_square(h);
    int status = 0;
    run([&] {
      status = gptq::check_hessian(ha.ptr<double>(), static_cast<std::size_t>(ha.dim(0)), rtol, atol_scale);
      return 0.0;
    });
    return status;
  }, py::arg("H"), py::arg("rtol"), py::arg("atol_scale"),
     "1 if a float64 H holds NaN or inf, else 0 if np.allclose(H, H.T, rtol, atol_scale * max|H|), 2 if not; "
     "one pass by cache blocks (gptq.hpp, check_hessian).");

  m.def("permute_symmetric", [](py::handle h, py::handle order, py::handle out) {
    const Array ha = check_square(h);
    const Array oa = check_order(order, ha.dim(0));
    const auto shape = ha.shape();
    const Array outa = check_array(out, "out", {DType::f64}, Access::write, &shape);
    check_disjoint(outa, {&ha});
    run([&] {
      gptq::permute_symmetric(ha.ptr<double>(), static_cast<std::size_t>(ha.dim(0)), oa.ptr<std::int64_t>(),
                              outa.mut<double>());
      return 0.0;
    });
  }, py::arg("H"), py::arg("order"), py::arg("out"),
     "out[a, b] = H[order[a], order[b]] for a float64 H, in one pass (gptq.hpp, permute_symmetric).");

  m.def("quantize", [](py::handle w, py::handle order, py::handle dead, py::handle s, py::handle top, int bits,
                       bool symmetric, std::size_t group_size, std::size_t block_size, py::handle codes,
                       py::handle scale, py::handle zero_point) {
    const Layer l = check_layer(w, order, dead, s);
    const Array ta = check_array(top, "top", {DType::f64}, Access::read);
    const std::size_t need = gptq::top_rows(l.order.ptr<std::int64_t>(), l.cols, group_size);
    if (ta.ndim() != 2 || ta.dim(1) != static_cast<py::ssize_t>(l.cols) || static_cast<std::size_t>(ta.dim(0)) < need)
      throw py::value_error("top: expected a float64 array (rows >= " + std::to_string(need) + ", " +
                            std::to_string(l.cols) + ") (the top rows of U), got " + describe(top));
    if (bits < 2 || bits > 8) throw py::value_error("bits: expected 2..8, got " + std::to_string(bits));
    check_common(0.0, block_size);
    const std::size_t gs = group_size == 0 ? l.cols : group_size;
    const auto n_groups = static_cast<py::ssize_t>(l.cols == 0 ? 0 : (l.cols + gs - 1) / gs);
    const std::vector<py::ssize_t> cshape{static_cast<py::ssize_t>(l.rows), static_cast<py::ssize_t>(l.cols)};
    const std::vector<py::ssize_t> sshape{static_cast<py::ssize_t>(l.rows), n_groups};
    const Array ca = check_array(codes, "codes", {symmetric ? DType::i8 : DType::u8}, Access::write, &cshape);
    const Array sa = check_array(scale, "scale", {DType::f32}, Access::write, &sshape);
    const Array za = check_array(zero_point, "zero_point", {DType::i32}, Access::write, &sshape);
    // act_order and damp are the factor's business (already in order, S)
    const gptq::QuantOptions o{bits, symmetric, group_size, /*act_order=*/false, /*damp=*/0.0, block_size};
    gptq::FactorRef f = l.factor();
    f.top = ta.ptr<double>();
    f.top_rows = static_cast<std::size_t>(ta.dim(0));
    return run([&] {
      return gptq::quantize(l.w.ptr<float>(), l.rows, l.cols, f, o, ca.mut<std::uint8_t>(), sa.mut<float>(),
                            za.mut<std::int32_t>());
    });
  }, py::arg("w"), py::arg("order"), py::arg("dead"), py::arg("S"), py::arg("top"), py::arg("bits"), py::arg("symmetric"),
     py::arg("group_size"), py::arg("block_size"), py::arg("codes"), py::arg("scale"), py::arg("zero_point"));

  m.def("prune", [](py::handle w, py::handle order, py::handle dead, py::handle s, double sparsity, std::size_t n,
                    std::size_t m_, std::size_t block_size, py::handle out, py::handle keep) {
    const Layer l = check_layer(w, order, dead, s);
    check_common(0.0, block_size);
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
    // damp is the factor's business (already in S)
    const gptq::PruneOptions o{sparsity, n, m_, /*damp=*/0.0, block_size};
    return run([&] {
      return gptq::prune(l.w.ptr<float>(), l.rows, l.cols, l.factor(), o, oa.mut<float>(), ka.mut<std::uint8_t>());
    });
  }, py::arg("w"), py::arg("order"), py::arg("dead"), py::arg("S"), py::arg("sparsity"), py::arg("n"), py::arg("m"),
     py::arg("block_size"), py::arg("out"), py::arg("keep"));
}

}  // namespace slimgrad::bind
