// Bindings of the int8-activation GEMM (slimgrad._core.quant.qgemm_*, see
// qgemm.hpp). slimgrad.quant.PackedWeight validates the user's arguments;
// these re-check everything that guards memory (dtypes, sizes, code ranges)
// with the GIL held, then release it.
#include <string>

#include "buffers.hpp"
#include "slimgrad/qgemm.hpp"

namespace slimgrad::bind {
namespace {

struct Shape {
  int bits;
  std::size_t n, k, group;
};

Shape check_shape(int bits, std::size_t n, std::size_t k, std::size_t group) {
  if (bits != 8 && bits != 4) throw py::value_error("bits: expected 8 or 4, got " + std::to_string(bits));
  const std::size_t step = bits == 8 ? 4 : 8;
  if (group < step || group % step != 0 || group > qgemm::kMaxGroup)
    throw py::value_error("group: expected a multiple of " + std::to_string(step) + " in [" + std::to_string(step) +
                          ", " + std::to_string(qgemm::kMaxGroup) + "], got " + std::to_string(group));
  constexpr std::size_t kLimit = std::size_t{1} << 40;
  if (n >= kLimit || k >= kLimit || !checked_mul(n + qgemm::kStrip, k + 8, kLimit))
    throw py::value_error("n, k: the weight is too large");
  return {bits, n, k, group};
}

qgemm::Packed packed_from(const Shape& s) {
  qgemm::Packed p;
  p.bits = s.bits;
  p.n = s.n;
  p.k = s.k;
  p.kpad = qgemm::packed_kpad(s.bits, s.k);
  p.group = s.group;
  p.n_groups = qgemm::packed_groups(s.bits, s.k, s.group);
  p.strips = (s.n + qgemm::kStrip - 1) / qgemm::kStrip;
  return p;
}

}  // namespace

void register_qgemm(py::module_& m) {
  m.def("qgemm_sizes", [](int bits, std::size_t n, std::size_t k, std::size_t group) {
    const qgemm::Packed p = packed_from(check_shape(bits, n, k, group));
    return py::make_tuple(p.strips * p.strip_bytes(), p.strips * p.n_groups * qgemm::kStrip, p.kpad, p.n_groups);
  }, py::arg("bits"), py::arg("n"), py::arg("k"), py::arg("group"),
     "(bytes of w, entries of scale and of shift, padded k, groups) of a packed n x k weight.");

  m.def("qgemm_pack", [](int bits, py::handle codes, py::handle scale, py::handle shift, std::size_t group,
                         py::handle w, py::handle pscale, py::handle pshift) {
    const Array ca = check_array(codes, "codes", {DType::i8}, Access::read);
    if (ca.ndim() != 2) throw py::value_error("codes: expected a 2-D (out, in) int8 array, got " + describe(codes));
    const Shape s = check_shape(bits, static_cast<std::size_t>(ca.dim(0)), static_cast<std::size_t>(ca.dim(1)), group);
    const qgemm::Packed p = packed_from(s);
    const std::vector<py::ssize_t> sshape{ca.dim(0), static_cast<py::ssize_t>((s.k + group - 1) / group)};
    const Array sa = check_array(scale, "scale", {DType::f32}, Access::read, &sshape);
    const std::vector<py::ssize_t> wshape{static_cast<py::ssize_t>(p.strips * p.strip_bytes())};
    const std::vector<py::ssize_t> pshape{static_cast<py::ssize_t>(p.strips * p.n_groups * qgemm::kStrip)};
    const Array wa = check_array(w, "w", {DType::u8}, Access::write, &wshape);
    const Array pa = check_array(pscale, "packed scale", {DType::f32}, Access::write, &pshape);
    check_disjoint(wa, {&ca, &sa});
    check_disjoint(pa, {&ca, &sa, &wa});
    Array ha, hpa;  // shift and its packed copy, both or neither
    if (shift.is_none() != pshift.is_none())
      throw py::value_error("shift, packed_shift: expected both arrays or both None");
    if (!shift.is_none()) {
      ha = check_array(shift, "shift", {DType::f32}, Access::read, &sshape);
      hpa = check_array(pshift, "packed shift", {DType::f32}, Access::write, &pshape);
      check_disjoint(hpa, {&ca, &sa, &wa, &pa, &ha});
    }
    const int lo = bits == 8 ? -127 : -8, hi = bits == 8 ? 127 : 7;
    const std::int8_t* c = ca.ptr<std::int8_t>();
    for (std::size_t i = 0; i < ca.size(); ++i)
      if (c[i] < lo || c[i] > hi)
        throw py::value_error("codes: expected " + std::to_string(bits) + "-bit codes in [" + std::to_string(lo) +
                              ", " + std::to_string(hi) + "], got " + std::to_string(c[i]) + " at index (" +
                              std::to_string(i / s.k) + ", " + std::to_string(i % s.k) + ")");
    py::gil_scoped_release release;
    qgemm::pack(bits, c, sa.ptr<float>(), shift.is_none() ? nullptr : ha.ptr<float>(), s.n, s.k, group,
                wa.mut<std::uint8_t>(), pa.mut<float>(), shift.is_none() ? nullptr : hpa.mut<float>());
  }, py::arg("bits"), py::arg("codes"), py::arg("scale"), py::arg("shift"), py::arg("group"), py::arg("w"),
     py::arg("packed_scale"), py::arg("packed_shift"));

  m.def("qgemm", [](py::handle x, int bits, std::size_t n, std::size_t k, std::size_t group, py::handle w,
                    py::handle pscale, py::handle pshift, int zoff, py::handle bias, py::handle y) {
    qgemm::Packed p = packed_from(check_shape(bits, n, k, group));
    const Array xa = check_array(x, "x", {DType::f32}, Access::read);
    if (k == 0 || xa.size() % k != 0)
      throw py::value_error("x: expected a multiple of " + std::to_string(k) + " elements, got " + describe(x));
    const std::size_t m = xa.size() / k;
    const std::vector<py::ssize_t> wshape{static_cast<py::ssize_t>(p.strips * p.strip_bytes())};
    const std::vector<py::ssize_t> pshape{static_cast<py::ssize_t>(p.strips * p.n_groups * qgemm::kStrip)};
    const Array wa = check_array(w, "w", {DType::u8}, Access::read, &wshape);
    const Array pa = check_array(pscale, "packed scale", {DType::f32}, Access::read, &pshape);
    Array ha;
    if (!pshift.is_none()) ha = check_array(pshift, "packed shift", {DType::f32}, Access::read, &pshape);
    // |zoff * qsum| <= 16 * 127 * group must stay far from int32's limit
    if (zoff < -16 || zoff > 16 || (zoff != 0 && group > 4096))
      throw py::value_error("zoff: expected an offset in [-16, 16] with groups up to 4096, got " +
                            std::to_string(zoff) + " with group " + std::to_string(group));
    const Array ya = check_array(y, "out", {DType::f32}, Access::write);
    if (ya.size() != m * n)
      throw py::value_error("out: expected " + std::to_string(m * n) + " float32 elements, got " + describe(y));
    const float* bp = nullptr;
    Array ba;
    if (!bias.is_none()) {
      const std::vector<py::ssize_t> bshape{static_cast<py::ssize_t>(n)};
      ba = check_array(bias, "bias", {DType::f32}, Access::read, &bshape);
      bp = ba.ptr<float>();
      check_disjoint(ya, {&ba});
    }
    check_disjoint(ya, {&xa, &wa, &pa});
    if (!pshift.is_none()) check_disjoint(ya, {&ha});
    p.w = wa.ptr<std::uint8_t>();
    p.scale = pa.ptr<float>();
    p.shift = pshift.is_none() ? nullptr : ha.ptr<float>();
    p.zoff = zoff;
    py::gil_scoped_release release;
    qgemm::gemm(xa.ptr<float>(), m, p, bp, ya.mut<float>());
  }, py::arg("x"), py::arg("bits"), py::arg("n"), py::arg("k"), py::arg("group"), py::arg("w"),
     py::arg("packed_scale"), py::arg("packed_shift"), py::arg("zoff"), py::arg("bias"),
     py::arg("out"));
}

}  // namespace slimgrad::bind
