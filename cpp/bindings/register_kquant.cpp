// Bindings of the GGUF K-quants (slimgrad._core.quant.kquant_*). The Python
// layer (slimgrad.quant.kquants) validates user-facing arguments and
// allocates outputs; these re-check what guards memory (dtypes, sizes)
// before releasing the GIL.
#include <string>

#include "buffers.hpp"
#include "slimgrad/kquant.hpp"

namespace slimgrad::bind {
namespace {

kquant::KType ktype(int t) {
  if (!kquant::valid_type(t))
    throw py::value_error("type: expected a ggml K-quant type id 10..14 (Q2_K..Q6_K), got " + std::to_string(t));
  return static_cast<kquant::KType>(t);
}

}  // namespace

void register_kquant(py::module_& m) {
  m.def("kquant_quantize", [](py::handle x, int type, std::size_t n_per_row, py::handle imatrix, py::handle out) {
    const kquant::KType t = ktype(type);
    const Array xa = check_array(x, "w", {DType::f32}, Access::read);
    if (n_per_row == 0 || n_per_row % kquant::kQK != 0 || xa.size() % n_per_row != 0)
      throw py::value_error("w: expected rows of a positive multiple of 256 values, got n_per_row " +
                            std::to_string(n_per_row) + " for " + describe(xa.arr));
    const std::size_t nrows = xa.size() / n_per_row;
    const float* qw = nullptr;
    Array ia;
    if (!imatrix.is_none()) {
      ia = check_array(imatrix, "imatrix", {DType::f32}, Access::read);
      if (ia.size() != n_per_row)
        throw py::value_error("imatrix: expected " + std::to_string(n_per_row) + " weights, got " +
                              describe(ia.arr));
      qw = ia.ptr<float>();
    }
    const Array oa = check_array(out, "out", {DType::u8}, Access::write);
    const std::size_t need = nrows * (n_per_row / kquant::kQK) * kquant::type_size(t);
    check_size(oa, need);
    py::gil_scoped_release release;  // x, imatrix, out are held by their Arrays for the call
    return kquant::quantize(t, xa.ptr<float>(), nrows, n_per_row, qw, oa.mut<std::uint8_t>());
  }, py::arg("w"), py::arg("type"), py::arg("n_per_row"), py::arg("imatrix"), py::arg("out"));

  m.def("kquant_dequantize", [](py::handle data, int type, py::handle out) {
    const kquant::KType t = ktype(type);
    const Array oa = check_array(out, "out", {DType::f32}, Access::write);
    const std::size_t blocks = whole_blocks(oa, kquant::kQK);
    const Array da = check_array(data, "data", {DType::u8}, Access::read);
    check_size(da, blocks * kquant::type_size(t));
    py::gil_scoped_release release;
    kquant::dequantize(t, da.ptr<std::uint8_t>(), blocks, oa.mut<float>());
  }, py::arg("data"), py::arg("type"), py::arg("out"));
}

}  // namespace slimgrad::bind
