// Bindings of the quant kernels (slimgrad._core.quant). The Python layer
// (slimgrad.quant) validates user-facing arguments and allocates outputs;
// these functions re-check everything that guards memory (dtypes, sizes,
// layout consistency) before releasing the GIL, so a wrong call raises
// instead of reading or writing out of bounds.
#include <stdexcept>
#include <string>

#include "buffers.hpp"
#include "slimgrad/quant.hpp"

namespace slimgrad::bind {
namespace {

using quant::Spec;

// spec[key] as T; a missing key or a value of the wrong type is a ValueError
// naming the key (not pybind11's "Unable to cast Python instance").
// One lookup per key (contains() and d[key] each built the key string: 30
// per spec, a visible part of a small product's call).
template <class T> T get(const py::dict& d, const char* key) {
  PyObject* v = PyDict_GetItemString(d.ptr(), key);  // borrowed, or null when missing
  if (v == nullptr) throw py::value_error(std::string("spec: missing '") + key + "'");
  try {
    return py::handle(v).cast<T>();
  } catch (const py::cast_error&) {
    throw py::value_error(std::string("spec['") + key + "']: expected a value of the right type, got " +
                          describe(py::handle(v)));
  }
}

Spec spec_from(const py::dict& d) {
  Spec s;
  s.bits = get<int>(d, "bits");
  s.symmetric = get<bool>(d, "symmetric");
  s.rows = get<std::size_t>(d, "rows");
  s.cols = get<std::size_t>(d, "cols");
  const std::string layout = get<std::string>(d, "layout");
  if (layout == "runs") s.layout = quant::Layout::runs;
  else if (layout == "groups") s.layout = quant::Layout::groups;
  else throw py::value_error("spec['layout']: expected 'runs' or 'groups', got '" + layout + "'");
  s.run = get<std::size_t>(d, "run");
  s.channels = get<std::size_t>(d, "channels");
  s.group_size = get<std::size_t>(d, "group_size");
  s.rounding = static_cast<quant::Rounding>(get<int>(d, "rounding"));
  s.seed = get<std::uint64_t>(d, "seed");
  s.clip = static_cast<quant::Clip>(get<int>(d, "clip"));
  s.percentile = get<double>(d, "percentile");
  s.mse_steps = get<int>(d, "mse_steps");
  s.mse_min_ratio = get<double>(d, "mse_min_ratio");
  s.propagate = get<bool>(d, "propagate");
  if (s.bits < 2 || s.bits > 8) throw py::value_error("spec['bits']: expected 2..8, got " + std::to_string(s.bits));
  if (s.group_size < 1 || s.run < 1 || s.channels < 1)
    throw py::value_error("spec: group_size, run and channels must be >= 1");
  // Every size the kernels form (rows * cols, cols * bits, rows * n_groups,
  // run * channels, group_size rounded up) stays below 2**62: no wrap-around.
  constexpr std::size_t kLimit = std::size_t{1} << 58;
  if (s.rows >= kLimit || s.cols >= kLimit || s.group_size >= kLimit || s.run >= kLimit || s.channels >= kLimit ||
      !checked_mul(s.rows, s.cols, kLimit) || !checked_mul(s.run, s.channels, kLimit))
    throw py::value_error("spec: rows, cols, group_size, run and channels must be below 2**58 with "
                          "rows * cols and run * channels below 2**58");
  if (s.layout == quant::Layout::runs && s.size() > 0 &&
      (s.size() % s.run != 0 || (s.size() / s.run) % s.channels != 0))
    throw py::value_error("spec: size " + std::to_string(s.size()) + " is not a multiple of run * channels");
  const int r = static_cast<int>(s.rounding), c = static_cast<int>(s.clip);
  if (r < 0 || r > 2) throw py::value_error("spec['rounding']: expected 0, 1 or 2");
  if (c < 0 || c > 2) throw py::value_error("spec['clip']: expected 0, 1 or 2");
  if (!(s.percentile > 0.0 && s.percentile <= 100.0))
    throw py::value_error("spec['percentile']: expected a value in (0, 100]");
  if (s.mse_steps < 1 || !(s.mse_min_ratio > 0.0 && s.mse_min_ratio <= 1.0))
    throw py::value_error("spec: mse_steps must be >= 1 and mse_min_ratio in (0, 1]");
  return s;
}

// `data`: the packed codes of a quantized tensor, rows * row_bytes bytes.
Array check_data(py::handle data, const Spec& s, Access access) {
  Array da = check_array(data, "data", {DType::i8, DType::u8}, access);
  check_size(da, s.rows * s.row_bytes());
  return da;
}

// `scale` (float32) and `zero_point` (int32): one of each per quantization group.
struct Params {
  Array scale, zero_point;
};
Params check_params(py::handle scale, py::handle zero_point, const Spec& s, Access access) {
  Params p{check_array(scale, "scale", {DType::f32}, access), {}};
  check_size(p.scale, s.n_params());
  p.zero_point = check_array(zero_point, "zero_point", {DType::i32}, access);
  check_size(p.zero_point, s.n_params());
  return p;
}

quant::GgufType gguf_type(int t) {
  if (t < 0 || static_cast<std::size_t>(t) >= quant::kGgufFormatCount) {
    std::string names;
    for (const quant::GgufFormat& f : quant::kGgufFormats) names += std::string(names.empty() ? "" : ", ") + f.name;
    throw py::value_error("type: expected 0.." + std::to_string(quant::kGgufFormatCount - 1) + " (" + names +
                          "), got " + std::to_string(t));
  }
  return static_cast<quant::GgufType>(t);
}

// The arguments of gguf_quantize (float32 in, GGUF bytes out) and
// gguf_dequantize (bytes in, float32 out), checked in that order: `type`, the
// input, `out`; then whole blocks of values, the bytes exactly their size, the
// two arrays disjoint.
struct GgufArgs {
  quant::GgufType type;
  Array in, out;
  std::size_t blocks;
};
GgufArgs gguf_args(int type, py::handle in, const char* in_name, DType in_dtype, py::handle out, DType out_dtype) {
  GgufArgs a{gguf_type(type), check_array(in, in_name, {in_dtype}, Access::read),
             check_array(out, "out", {out_dtype}, Access::write), 0};
  const bool quantize = in_dtype == DType::f32;
  const Array& values = quantize ? a.in : a.out;
  const Array& bytes = quantize ? a.out : a.in;
  a.blocks = whole_blocks(values, quant::kGgufBlock);
  check_size(bytes, a.blocks * quant::gguf_type_size(a.type));
  check_disjoint(bytes, {&values});
  return a;
}

}  // namespace

void register_quant(py::module_& m) {
  m.def("quantize", [](py::handle x, const py::dict& spec, py::handle scale, py::handle zero_point,
                       py::handle data) {
    const Spec s = spec_from(spec);
    const Array xa = check_array(x, "w", {DType::f32}, Access::read);
    check_size(xa, s.size());
    const auto [sa, za] = check_params(scale, zero_point, s, Access::write);
    const Array da = check_data(data, s, Access::write);
    check_disjoint(sa, {&xa, &za, &da});
    check_disjoint(za, {&xa, &da});
    check_disjoint(da, {&xa});
    py::gil_scoped_release release;  // every array is held by its Array for the call
    return quant::quantize(xa.ptr<float>(), s, sa.mut<float>(), za.mut<std::int32_t>(), da.mut<std::uint8_t>());
  }, py::arg("w"), py::arg("spec"), py::arg("scale"), py::arg("zero_point"), py::arg("data"));

  m.def("dequantize", [](py::handle data, const py::dict& spec, py::handle scale, py::handle zero_point,
                         py::handle out) {
    const Spec s = spec_from(spec);
    const Array da = check_data(data, s, Access::read);
    const auto [sa, za] = check_params(scale, zero_point, s, Access::read);
    const Array oa = check_array(out, "out", {DType::f32}, Access::write);
    check_size(oa, s.size());
    check_disjoint(oa, {&da, &sa, &za});
    py::gil_scoped_release release;
    quant::dequantize(da.ptr<std::uint8_t>(), s, sa.ptr<float>(), za.ptr<std::int32_t>(), oa.mut<float>());
  }, py::arg("data"), py::arg("spec"), py::arg("scale"), py::arg("zero_point"), py::arg("out"));

  m.def("unpack", [](py::handle data, const py::dict& spec, py::handle codes) {
    const Spec s = spec_from(spec);
    const Array da = check_data(data, s, Access::read);
    const Array ca = check_array(codes, "codes", {DType::i8, DType::u8}, Access::write);
    check_size(ca, s.size());
    check_disjoint(ca, {&da});
    py::gil_scoped_release release;
    quant::unpack(da.ptr<std::uint8_t>(), s, ca.mut<std::uint8_t>());
  }, py::arg("data"), py::arg("spec"), py::arg("codes"));

  m.def("pack", [](py::handle codes, const py::dict& spec, py::handle data) {
    const Spec s = spec_from(spec);
    const Array ca = check_array(codes, "codes", {DType::i8, DType::u8}, Access::read);
    check_size(ca, s.size());
    const Array da = check_data(data, s, Access::write);
    check_disjoint(da, {&ca});
    py::gil_scoped_release release;
    quant::pack(ca.ptr<std::uint8_t>(), s, da.mut<std::uint8_t>());
  }, py::arg("codes"), py::arg("spec"), py::arg("data"));

  m.def("matmul", [](py::handle x, py::handle data, const py::dict& spec, py::handle scale, py::handle zero_point,
                     py::handle y) {
    const Spec s = spec_from(spec);
    if (!(s.bits == 8 || (s.bits == 4 && (s.layout == quant::Layout::runs || s.group_size % 2 == 0))))
      throw py::value_error("qt: the fused product takes 8-bit weights or 4-bit weights with an even group size");
    if (s.layout == quant::Layout::runs && !(s.channels == 1 || (s.channels == s.rows && s.run == s.cols)))
      throw py::value_error("qt: expected parameters per tensor, per row (axis 0) or per group along the row");
    const Array xa = check_array(x, "x", {DType::f32}, Access::read);
    if (s.cols == 0 || xa.size() % s.cols != 0)
      throw py::value_error("x: expected a positive multiple of " + std::to_string(s.cols) + " elements, got " +
                            describe(xa.arr));
    const std::size_t batch = xa.size() / s.cols;
    if (!checked_mul(batch, s.rows, std::size_t{1} << 58))
      throw py::value_error("x: batch * rows is too large, got " + describe(xa.arr));
    const Array da = check_data(data, s, Access::read);
    const auto [sa, za] = check_params(scale, zero_point, s, Access::read);
    const Array ya = check_array(y, "out", {DType::f32}, Access::write);
    check_size(ya, batch * s.rows);
    check_disjoint(ya, {&xa, &da, &sa, &za});
    py::gil_scoped_release release;
    quant::qmatmul(xa.ptr<float>(), batch, s, da.ptr<std::uint8_t>(), sa.ptr<float>(), za.ptr<std::int32_t>(),
                   ya.mut<float>());
  }, py::arg("x"), py::arg("data"), py::arg("spec"), py::arg("scale"), py::arg("zero_point"), py::arg("out"));

  m.def("matmul_int8", [](py::handle a, py::handle b, py::handle c) {
    const Array aa = check_array(a, "a", {DType::i8}, Access::read);
    const Array ba = check_array(b, "b", {DType::i8}, Access::read);
    if (aa.ndim() != 2 || ba.ndim() != 2 || aa.dim(1) != ba.dim(1))
      throw py::value_error("a, b: expected int8 arrays of shapes (M, K) and (N, K), got " + describe(aa.arr) +
                            " and " + describe(ba.arr));
    const std::vector<py::ssize_t> shape{aa.dim(0), ba.dim(0)};
    const Array ca = check_array(c, "out", {DType::i32}, Access::write, &shape);
    check_disjoint(ca, {&aa, &ba});
    py::gil_scoped_release release;
    quant::matmul_s8(aa.ptr<std::int8_t>(), static_cast<std::size_t>(aa.dim(0)), ba.ptr<std::int8_t>(),
                     static_cast<std::size_t>(ba.dim(0)), static_cast<std::size_t>(aa.dim(1)), ca.mut<std::int32_t>());
  }, py::arg("a"), py::arg("b"), py::arg("out"));
  m.def("has_avx512_vnni", &quant::has_avx512_vnni);

  m.def("gguf_formats", [] {
    py::dict out;
    for (std::size_t i = 0; i < quant::kGgufFormatCount; ++i) {
      const quant::GgufFormat& f = quant::kGgufFormats[i];
      py::dict row;
      row["type"] = i;  // the `type` argument of gguf_quantize / gguf_dequantize
      row["ggml_type"] = f.ggml_type;
      row["block_size"] = f.block_size;
      row["type_size"] = f.type_size;
      out[f.name] = row;
    }
    return out;
  }, "The GGUF traits table (quant.hpp): name -> type, ggml_type, block_size, type_size.");

  m.def("gguf_quantize", [](py::handle x, int type, py::handle out) {
    const GgufArgs a = gguf_args(type, x, "w", DType::f32, out, DType::u8);
    py::gil_scoped_release release;
    return quant::gguf_quantize(a.type, a.in.ptr<float>(), a.blocks, a.out.mut<std::uint8_t>());
  }, py::arg("w"), py::arg("type"), py::arg("out"));
  m.def("gguf_dequantize", [](py::handle data, int type, py::handle out) {
    const GgufArgs a = gguf_args(type, data, "data", DType::u8, out, DType::f32);
    py::gil_scoped_release release;
    quant::gguf_dequantize(a.type, a.in.ptr<std::uint8_t>(), a.blocks, a.out.mut<float>());
  }, py::arg("data"), py::arg("type"), py::arg("out"));
}

}  // namespace slimgrad::bind
