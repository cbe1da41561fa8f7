// Bindings of the distill kernels (slimgrad._core.distill).
//
// Every argument is checked (dtypes, shapes, class indices in range, top-k
// indices distinct per row, scalar options) before any memory is written, so
// a bad call raises and changes nothing. The checks of index values are O(B k)
// loops done with the GIL held; the kernels run with it released.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "outputs.hpp"
#include "slimgrad/distill.hpp"

namespace slimgrad::bind {
namespace {

std::string num(double x) {
  std::string s = py::str(py::float_(x));
  return s;
}

// Byte ranges of two arrays intersect.
bool overlaps(const Array& a, const Array& b) {
  const auto* a0 = static_cast<const char*>(a.arr.data());
  const auto* b0 = static_cast<const char*>(b.arr.data());
  const auto* a1 = a0 + a.arr.nbytes();
  const auto* b1 = b0 + b.arr.nbytes();
  return a.arr.nbytes() > 0 && b.arr.nbytes() > 0 && a0 < b1 && b0 < a1;
}

void check_indices(const Array& a, std::size_t rows, std::size_t per_row, std::size_t classes,
                   bool distinct) {
  const std::int64_t* p = a.ptr<std::int64_t>();
  std::vector<std::int64_t> sorted(distinct ? per_row : 0);
  for (std::size_t r = 0; r < rows; ++r) {
    const std::int64_t* row = p + r * per_row;
    for (std::size_t j = 0; j < per_row; ++j) {
      if (row[j] < 0 || static_cast<std::uint64_t>(row[j]) >= classes) {
        const std::size_t flat = r * per_row + j;
        throw py::value_error(a.name + ": expected class indices in [0, " + std::to_string(classes) +
                              "), got " + std::to_string(row[j]) + " at flat position " +
                              std::to_string(flat));
      }
    }
    if (distinct) {
      std::copy(row, row + per_row, sorted.begin());
      std::sort(sorted.begin(), sorted.end());
      const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
      if (dup != sorted.end())
        throw py::value_error(a.name + ": expected distinct indices in each row, got " +
                              std::to_string(*dup) + " twice in row " + std::to_string(r));
    }
  }
}

py::tuple kd_loss_binding(py::handle student, py::handle teacher, py::handle labels, double temperature,
                          double alpha, const std::string& reduction, py::handle teacher_indices,
                          py::handle out) {
  if (reduction != "batchmean" && reduction != "mean" && reduction != "sum")
    throw py::value_error("reduction: expected 'batchmean', 'mean' or 'sum', got '" + reduction + "'");
  if (!(std::isfinite(temperature) && temperature > 0))
    throw py::value_error("temperature: expected a finite number > 0, got " + num(temperature));
  if (!(alpha >= 0 && alpha <= 1))
    throw py::value_error("alpha: expected a number in [0, 1], got " + num(alpha));

  const Array sa = check_array(student, "student_logits", {DType::f32, DType::f64}, Access::read);
  if (sa.ndim() != 2)
    throw py::value_error("student_logits: expected a 2-D array (batch, classes), got " + describe(student));
  const std::size_t batch = static_cast<std::size_t>(sa.dim(0)), classes = static_cast<std::size_t>(sa.dim(1));
  if (classes == 0)
    throw py::value_error("student_logits: expected at least one class, got " + describe(student));

  Array ta, ia, la;  // ia, la: only when given (has_indices, has_labels)
  const bool has_indices = !teacher_indices.is_none(), has_labels = !labels.is_none();
  std::size_t k = 0;
  if (!has_indices) {
    ta = check_like(teacher, "teacher_logits", sa, Access::read);
  } else {
    ta = check_array(teacher, "teacher_logits", {sa.dtype}, Access::read);
    if (ta.ndim() != 2 || ta.dim(0) != sa.dim(0) || ta.dim(1) < 1 || ta.dim(1) > sa.dim(1))
      throw py::value_error("teacher_logits: expected top-k values of shape (" + std::to_string(batch) +
                            ", k) with 1 <= k <= " + std::to_string(classes) + ", got " + describe(teacher));
    k = static_cast<std::size_t>(ta.dim(1));
    const auto shape = ta.shape();
    ia = check_array(teacher_indices, "teacher_indices", {DType::i64}, Access::read, &shape);
  }

  if (!has_labels) {
    if (alpha < 1)
      throw py::value_error("labels: required when alpha < 1 (alpha=" + num(alpha) +
                            "), got None; pass labels, or alpha=1.0 for pure distillation");
  } else {
    const std::vector<py::ssize_t> shape{sa.dim(0)};
    la = check_array(labels, "labels", {DType::i64}, Access::read, &shape);
  }

  Array oa;
  if (out.is_none()) {
    oa.arr = new_output(py::dtype(sa.dtype == DType::f32 ? "float32" : "float64"), {sa.dim(0), sa.dim(1)});
    oa.name = "out";
    oa.dtype = sa.dtype;
  } else {
    oa = check_like(out, "out", sa, Access::write);
    check_same_or_disjoint(oa, {&sa});
    const bool given[] = {true, has_indices, has_labels};
    const Array* others[] = {&ta, &ia, &la};
    for (int j = 0; j < 3; ++j)
      if (given[j] && overlaps(oa, *others[j]))
        throw py::value_error("out: expected memory not shared with " + others[j]->name +
                              " (only student_logits may be overwritten), got an overlapping array");
  }
  if (has_labels) check_indices(la, batch, 1, classes, false);
  if (has_indices) check_indices(ia, batch, k, classes, true);

  KdOptions o;
  o.temperature = temperature;
  o.alpha = alpha;
  const double b = static_cast<double>(batch);
  if (reduction == "batchmean") {
    o.kl_scale = o.ce_scale = 1.0 / b;
  } else if (reduction == "mean") {
    o.kl_scale = 1.0 / (b * static_cast<double>(classes));
    o.ce_scale = 1.0 / b;
  }
  const std::int64_t* idx = has_indices ? ia.ptr<std::int64_t>() : nullptr;
  const std::int64_t* lab = has_labels ? la.ptr<std::int64_t>() : nullptr;
  double loss;
  {
    py::gil_scoped_release release;  // every array is held by sa/ta/ia/la/oa
    if (sa.dtype == DType::f32)
      loss = kd_loss(sa.ptr<float>(), ta.ptr<float>(), idx, k, lab, oa.mut<float>(), batch, classes, o);
    else
      loss = kd_loss(sa.ptr<double>(), ta.ptr<double>(), idx, k, lab, oa.mut<double>(), batch, classes, o);
  }
  return py::make_tuple(loss, oa.arr);
}

py::tuple mse_binding(py::handle student, py::handle teacher, py::handle out) {
  const Array sa = check_array(student, "student_feat", {DType::f32, DType::f64}, Access::read);
  const Array ta = check_like(teacher, "teacher_feat", sa, Access::read);
  Array oa;
  if (out.is_none()) {
    oa.arr = new_output(py::dtype(sa.dtype == DType::f32 ? "float32" : "float64"), sa.shape());
    oa.dtype = sa.dtype;
  } else {
    oa = check_like(out, "out", sa, Access::write);
    check_same_or_disjoint(oa, {&sa});
    if (overlaps(oa, ta))
      throw py::value_error("out: expected memory not shared with teacher_feat (only student_feat may be "
                            "overwritten), got an overlapping array");
  }
  double loss;
  {
    py::gil_scoped_release release;
    loss = sa.dtype == DType::f32 ? mse_loss(sa.ptr<float>(), ta.ptr<float>(), oa.mut<float>(), sa.size())
                                  : mse_loss(sa.ptr<double>(), ta.ptr<double>(), oa.mut<double>(), sa.size());
  }
  return py::make_tuple(loss, oa.arr);
}

}  // namespace

void register_distill(py::module_& m) {
  m.def("kd_loss", &kd_loss_binding, py::arg("student_logits"), py::arg("teacher_logits"), py::arg("labels"),
        py::arg("temperature"), py::arg("alpha"), py::arg("reduction"), py::arg("teacher_indices"),
        py::arg("out"));
  m.def("mse_loss", &mse_binding, py::arg("student_feat"), py::arg("teacher_feat"), py::arg("out"));
  m.def("exp", [](py::handle x, py::handle out) {
    const Array xa = check_array(x, "x", {DType::f32, DType::f64}, Access::read);
    const Array oa = check_like(out, "out", xa, Access::write);
    check_same_or_disjoint(oa, {&xa});
    py::gil_scoped_release release;
    if (xa.dtype == DType::f32)
      vector_exp(xa.ptr<float>(), oa.mut<float>(), xa.size());
    else
      vector_exp(xa.ptr<double>(), oa.mut<double>(), xa.size());
  }, py::arg("x"), py::arg("out"), "Test hook: out = exp(x) with the active ISA's vector exp.");
}

}  // namespace slimgrad::bind
