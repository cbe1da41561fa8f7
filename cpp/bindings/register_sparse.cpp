// Bindings of the sparse products (slimgrad._core.sparse).
//
// Inputs are only read; y is a new float32 array allocated here with the GIL
// held. Every argument (dtypes, shapes, the 2:4 packing, the CSR structure)
// is checked before any work: the kernels trust indices, so a bad one would
// read out of bounds, and an error must change nothing.
#include <algorithm>
#include <cstdlib>
#include <new>
#include <string>

#include "buffers.hpp"
#include "outputs.hpp"
#include "slimgrad/sparse.hpp"

namespace slimgrad::bind {
namespace {

std::string dims(const Array& a) { return shape_str(a.shape()); }

Array check_x(py::handle x) {
  Array xa = check_array(x, "x", {DType::f32}, Access::read);
  if (xa.ndim() != 2) throw py::value_error("x: expected a 2-D (batch, in) float32 array, got shape " + dims(xa));
  return xa;
}

// y on a cache line: threads write neighbouring row chunks of the same y
// rows (96 floats at 384x384), and with NumPy's 16-byte aligned buffers the
// line at every chunk boundary was written by two threads (false sharing
// on every batch row). Owned by a capsule, freed with the array.
py::array new_y(std::size_t batch, std::size_t out) {
  if (batch * out * sizeof(float) >= kMinCachedBytes)  // the output cache's blocks are 64-byte aligned too
    return new_output(py::dtype("float32"), {static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(out)});
  const std::size_t bytes = std::max<std::size_t>(64, (batch * out * sizeof(float) + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  py::capsule owner(p, [](void* q) { std::free(q); });
  return py::array_t<float>({static_cast<py::ssize_t>(batch), static_cast<py::ssize_t>(out)}, static_cast<float*>(p),
                            owner);
}

// A 2:4 weight's (values, positions), checked: dtypes, shapes (for x's
// columns when x is given, named in the messages) and, unless prechecked,
// every group's positions.
struct Arrays24 {
  Array values, positions;
};
Arrays24 check_24(py::handle values, py::handle positions, bool prechecked, const Array* x) {
  const Array va = check_array(values, "values", {DType::f32}, Access::read);
  if (va.ndim() != 2)
    throw py::value_error("values: expected a 2-D (out, in / 2) float32 array, got shape " + dims(va));
  if (x != nullptr) {
    const auto in = static_cast<std::size_t>(x->dim(1)), half = static_cast<std::size_t>(va.dim(1));
    if (in % 4 != 0 || half * 2 != in)
      throw py::value_error("values: expected shape (out, " + std::to_string(in / 2) + ") for x of shape " +
                            dims(*x) + " (in divisible by 4), got " + dims(va));
  } else if (va.dim(1) % 2 != 0) {
    throw py::value_error("values: expected an even number of columns (in / 2, in divisible by 4), got shape " +
                          dims(va));
  }
  const Array pa = check_array(positions, "positions", {DType::u8}, Access::read);
  const std::size_t kept = va.size(), nbytes = (kept + 3) / 4;
  if (pa.ndim() != 1 || pa.size() != nbytes)
    throw py::value_error("positions: expected a 1-D uint8 array of " + std::to_string(nbytes) + " bytes for " +
                          std::to_string(kept) + " values, got shape " + dims(pa));
  if (!prechecked && !positions24_valid(pa.ptr<std::uint8_t>(), kept))
    throw py::value_error("positions: each group's two positions must be distinct and increasing (as compress_24 "
                          "writes them)");
  return {va, pa};
}

// gemm24(x, values, positions) -> y = x @ W^T, W 2:4-compressed (out, in).
// prechecked: the positions were checked when the (read-only) weight was
// packed (slimgrad.prune.pack_sparse): skip that pass. Dtypes and shapes are
// always checked; any 2-bit position is in bounds, so a wrong one could only
// give a wrong result, never a bad read.
py::array gemm24_py(py::handle x, py::handle values, py::handle positions, bool prechecked) {
  const Array xa = check_x(x);
  const Arrays24 w = check_24(values, positions, prechecked, &xa);
  const auto batch = static_cast<std::size_t>(xa.dim(0)), in = static_cast<std::size_t>(xa.dim(1));
  const auto out = static_cast<std::size_t>(w.values.dim(0));
  py::array y = new_y(batch, out);
  auto* yp = static_cast<float*>(y.mutable_data());
  {
    py::gil_scoped_release release;
    gemm24(xa.ptr<float>(), batch, in, w.values.ptr<float>(), w.positions.ptr<std::uint8_t>(), out, yp);
  }
  return y;
}

// pack_24_slices(values, positions) -> (values, ctrl): W's 2:4 arrays
// regrouped for gemm24_slices (layout in sparse.hpp), checked first as
// gemm24 checks them.
py::tuple pack_24_slices_py(py::handle values, py::handle positions) {
  const Arrays24 w = check_24(values, positions, false, nullptr);
  const auto out = static_cast<std::size_t>(w.values.dim(0)), in = 2 * static_cast<std::size_t>(w.values.dim(1));
  const std::size_t slices = (out + kSliceRows - 1) / kSliceRows;
  py::array_t<float> svalues(static_cast<py::ssize_t>(slices * kSliceRows * (in / 2)));
  py::array_t<std::uint32_t> ctrl(static_cast<py::ssize_t>(slices * slice24_chunks(in) * kSliceRows));
  pack_24_slices(w.values.ptr<float>(), w.positions.ptr<std::uint8_t>(), out, in, svalues.mutable_data(),
                 ctrl.mutable_data());
  return py::make_tuple(svalues, ctrl);
}

// gemm24_slices(x, values, ctrl, out, in) -> y = x @ W^T from
// pack_24_slices' arrays, which it trusts (pack_sparse keeps them in
// buffers nobody can write; any ctrl bits pick a column inside its group);
// checks x, the dtypes and the sizes.
py::array gemm24_slices_py(py::handle x, py::handle values, py::handle ctrl, std::size_t out, std::size_t checked_in) {
  const Array xa = check_x(x);
  const auto batch = static_cast<std::size_t>(xa.dim(0)), in = static_cast<std::size_t>(xa.dim(1));
  if (checked_in != in || in % 4 != 0)
    throw py::value_error("x: expected " + std::to_string(checked_in) +
                          " columns (the packed weight's in_features, divisible by 4), got shape " + dims(xa));
  const std::size_t slices = (out + kSliceRows - 1) / kSliceRows;
  const std::vector<py::ssize_t> values_shape{static_cast<py::ssize_t>(slices * kSliceRows * (in / 2))};
  const std::vector<py::ssize_t> ctrl_shape{static_cast<py::ssize_t>(slices * slice24_chunks(in) * kSliceRows)};
  const Array va = check_array(values, "values", {DType::f32}, Access::read, &values_shape);
  const Array ca = check_array(ctrl, "ctrl", {DType::u32}, Access::read, &ctrl_shape);
  py::array y = new_y(batch, out);
  auto* yp = static_cast<float*>(y.mutable_data());
  {
    py::gil_scoped_release release;
    gemm24_slices(xa.ptr<float>(), batch, in, va.ptr<float>(), ca.ptr<std::uint32_t>(), out, yp);
  }
  return y;
}

template <class P>
void check_indptr(const Array& pa, std::size_t out, std::size_t nnz) {
  const P* p = pa.ptr<P>();
  if (p[0] != 0 || static_cast<std::size_t>(p[out]) != nnz)
    throw py::value_error("indptr: expected indptr[0] == 0 and indptr[-1] == " + std::to_string(nnz) +
                          " (the number of stored values), got " + std::to_string(p[0]) + " and " +
                          std::to_string(p[out]));
  bool decreasing = false;  // branch-free first pass (vectorizes), then find where
  for (std::size_t r = 0; r < out; ++r) decreasing |= p[r + 1] < p[r];
  for (std::size_t r = 0; decreasing && r < out; ++r)
    if (p[r + 1] < p[r])
      throw py::value_error("indptr: expected non-decreasing values, got indptr[" + std::to_string(r + 1) +
                            "] = " + std::to_string(p[r + 1]) + " < " + std::to_string(p[r]));
}

// The CSR arrays, checked: dtypes, shapes, and unless prechecked indptr
// (0, non-decreasing, nnz) and every column in [0, in), in being x's columns
// (named in the message) or, without x, the weight's in_features.
struct CsrArrays {
  Array data, indices, indptr;
};
CsrArrays check_csr(py::handle data, py::handle indices, py::handle indptr, std::size_t out, std::size_t in,
                    bool prechecked, const Array* x) {
  const Array da = check_array(data, "data", {DType::f32}, Access::read);
  if (da.ndim() != 1) throw py::value_error("data: expected a 1-D float32 array, got shape " + dims(da));
  const std::vector<py::ssize_t> nnz_shape{static_cast<py::ssize_t>(da.size())};
  const Array ia = check_array(indices, "indices", {DType::i32}, Access::read, &nnz_shape);
  const std::vector<py::ssize_t> ptr_shape{static_cast<py::ssize_t>(out + 1)};
  const Array pa = check_array(indptr, "indptr", {DType::i32, DType::i64}, Access::read, &ptr_shape);
  if (prechecked) return {da, ia, pa};
  const std::size_t nnz = da.size();
  if (pa.dtype == DType::i32)
    check_indptr<std::int32_t>(pa, out, nnz);
  else
    check_indptr<std::int64_t>(pa, out, nnz);
  const std::int32_t* cols = ia.ptr<std::int32_t>();
  std::int32_t lo = 0, hi = 0;  // min / max first: a loop the compiler vectorizes
  for (std::size_t p = 0; p < nnz; ++p) {
    lo = std::min(lo, cols[p]);
    hi = std::max(hi, cols[p]);
  }
  for (std::size_t p = 0; (lo < 0 || static_cast<std::size_t>(hi) >= in) && p < nnz; ++p)
    if (cols[p] < 0 || static_cast<std::size_t>(cols[p]) >= in)
      throw py::value_error("indices: expected columns in [0, " + std::to_string(in) + ")" +
                            (x ? " (x has shape " + dims(*x) + ")" : std::string(" (in_features)")) + ", got " +
                            std::to_string(cols[p]) + " at " + std::to_string(p));
  return {da, ia, pa};
}

// spmm_csr(x, data, indices, indptr, out) -> y = x @ W^T, W in CSR (out, in).
// prechecked: indptr and the columns were checked when the weight was packed
// into arrays nobody can write (pack_sparse: immutable buffers), for this
// in_features (checked again here): skip those passes.
py::array spmm_csr_py(py::handle x, py::handle data, py::handle indices, py::handle indptr, std::size_t out,
                      bool prechecked, std::size_t checked_in) {
  const Array xa = check_x(x);
  const auto batch = static_cast<std::size_t>(xa.dim(0)), in = static_cast<std::size_t>(xa.dim(1));
  if (prechecked && checked_in != in)
    throw py::value_error("x: expected " + std::to_string(checked_in) +
                          " columns (the packed weight's in_features), got shape " + dims(xa));
  const CsrArrays csr = check_csr(data, indices, indptr, out, in, prechecked, &xa);
  const float* vals = csr.data.ptr<float>();
  const std::int32_t* cols = csr.indices.ptr<std::int32_t>();
  py::array y = new_y(batch, out);
  auto* yp = static_cast<float*>(y.mutable_data());
  {
    py::gil_scoped_release release;
    if (csr.indptr.dtype == DType::i32)
      spmm_csr(xa.ptr<float>(), batch, in, vals, cols, csr.indptr.ptr<std::int32_t>(), out, yp);
    else
      spmm_csr(xa.ptr<float>(), batch, in, vals, cols, csr.indptr.ptr<std::int64_t>(), out, yp);
  }
  return y;
}

// pack_csr_slices(data, indices, indptr, out, in) -> (values, index, base,
// starts, rows): W's CSR regrouped for spmm_slices (layout in sparse.hpp);
// rows is empty when the slices keep W's row order. Checks the CSR first,
// as spmm_csr does.
py::tuple pack_csr_slices_py(py::handle data, py::handle indices, py::handle indptr, std::size_t out,
                             std::size_t in) {
  const CsrArrays csr = check_csr(data, indices, indptr, out, in, false, nullptr);
  const std::size_t slices = (out + kSliceRows - 1) / kSliceRows;
  py::array_t<std::int64_t> starts(static_cast<py::ssize_t>(slices + 1));
  py::array_t<std::int32_t> order(static_cast<py::ssize_t>(out));
  const std::int32_t* cols = csr.indices.ptr<std::int32_t>();
  const bool reordered =
      csr.indptr.dtype == DType::i32
          ? csr_slice_rows(cols, csr.indptr.ptr<std::int32_t>(), out, in, order.mutable_data(), starts.mutable_data())
          : csr_slice_rows(cols, csr.indptr.ptr<std::int64_t>(), out, in, order.mutable_data(), starts.mutable_data());
  const auto steps = static_cast<py::ssize_t>(starts.data()[slices]);
  py::array_t<float> values(steps * static_cast<py::ssize_t>(kSliceRows));
  py::array_t<std::uint8_t> index(steps * static_cast<py::ssize_t>(kSliceRows));
  py::array_t<std::int32_t> base(steps);
  if (csr.indptr.dtype == DType::i32)
    pack_csr_slices(csr.data.ptr<float>(), cols, csr.indptr.ptr<std::int32_t>(), order.data(), out, in,
                    starts.data(), values.mutable_data(), index.mutable_data(), base.mutable_data());
  else
    pack_csr_slices(csr.data.ptr<float>(), cols, csr.indptr.ptr<std::int64_t>(), order.data(), out, in,
                    starts.data(), values.mutable_data(), index.mutable_data(), base.mutable_data());
  return py::make_tuple(values, index, base, starts, reordered ? order : py::array_t<std::int32_t>(0));
}

// spmm_slices(x, values, index, base, starts, rows, out, in) -> y = x @ W^T
// from pack_csr_slices' arrays (rows empty: W's order), which it trusts
// (pack_sparse keeps them in buffers nobody can write); checks x, dtypes and
// that the sizes agree.
py::array spmm_slices_py(py::handle x, py::handle values, py::handle index, py::handle base, py::handle starts,
                         py::handle rows, std::size_t out, std::size_t checked_in) {
  const Array xa = check_x(x);
  const auto batch = static_cast<std::size_t>(xa.dim(0)), in = static_cast<std::size_t>(xa.dim(1));
  if (checked_in != in)
    throw py::value_error("x: expected " + std::to_string(checked_in) +
                          " columns (the packed weight's in_features), got shape " + dims(xa));
  const std::size_t slices = (out + kSliceRows - 1) / kSliceRows;
  const std::vector<py::ssize_t> starts_shape{static_cast<py::ssize_t>(slices + 1)};
  const Array sa = check_array(starts, "starts", {DType::i64}, Access::read, &starts_shape);
  const std::int64_t steps = sa.ptr<std::int64_t>()[slices];
  const std::vector<py::ssize_t> lanes_shape{static_cast<py::ssize_t>(steps * kSliceRows)};
  const std::vector<py::ssize_t> steps_shape{static_cast<py::ssize_t>(steps)};
  const Array va = check_array(values, "values", {DType::f32}, Access::read, &lanes_shape);
  const Array ia = check_array(index, "index", {DType::u8}, Access::read, &lanes_shape);
  const Array ba = check_array(base, "base", {DType::i32}, Access::read, &steps_shape);
  const Array ra = check_array(rows, "rows", {DType::i32}, Access::read);
  if (ra.size() != 0 && ra.size() != out)
    throw py::value_error("rows: expected 0 or " + std::to_string(out) + " entries (out_features), got " +
                          describe(rows));
  const bool reordered = ra.size() != 0;
  py::array y = new_y(batch, out);
  auto* yp = static_cast<float*>(y.mutable_data());
  {
    py::gil_scoped_release release;
    spmm_slices(xa.ptr<float>(), batch, in, va.ptr<float>(), ia.ptr<std::uint8_t>(), ba.ptr<std::int32_t>(),
                sa.ptr<std::int64_t>(), reordered ? ra.ptr<std::int32_t>() : nullptr, out, yp);
  }
  return y;
}

}  // namespace

void register_sparse(py::module_& m) {
  m.def("gemm24", &gemm24_py, py::arg("x"), py::arg("values"), py::arg("positions"), py::arg("prechecked") = false,
        "y = x @ W^T for W (out, in) 2:4-compressed as (values, positions); float32, new y (batch, out).");
  m.def("pack_24_slices", &pack_24_slices_py, py::arg("values"), py::arg("positions"),
        "W's 2:4 (values, positions) regrouped for gemm24_slices: (values float32, ctrl uint32).");
  m.def("gemm24_slices", &gemm24_slices_py, py::arg("x"), py::arg("values"), py::arg("ctrl"),
        py::arg("out_features"), py::arg("in_features"),
        "y = x @ W^T from pack_24_slices' arrays (trusted: keep them unwritable); new y.");
  m.def("spmm_csr", &spmm_csr_py, py::arg("x"), py::arg("data"), py::arg("indices"), py::arg("indptr"),
        py::arg("out_features"), py::arg("prechecked") = false, py::arg("checked_in") = 0,
        "y = x @ W^T for W (out, in) in CSR (float32 data, int32 indices, int32/int64 indptr); new y.");
  m.def("pack_csr_slices", &pack_csr_slices_py, py::arg("data"), py::arg("indices"), py::arg("indptr"),
        py::arg("out_features"), py::arg("in_features"),
        "W's CSR regrouped for spmm_slices: (values float32, index uint8, base int32, starts int64, rows int32).");
  m.def("spmm_slices", &spmm_slices_py, py::arg("x"), py::arg("values"), py::arg("index"), py::arg("base"),
        py::arg("starts"), py::arg("rows"), py::arg("out_features"), py::arg("in_features"),
        "y = x @ W^T from pack_csr_slices' arrays (trusted: keep them unwritable); new y.");
}

}  // namespace slimgrad::bind
