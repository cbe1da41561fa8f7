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
  std::size_t n, k, group, sub;
};

Shape check_shape(int bits, std::size_t n, std::size_t k, std::size_t group, std::size_t sub) {
  if (bits < 4 || bits > 8 || bits == 7)
    throw py::value_error("bits: expected 8, 6, 5 or 4, got " + std::to_string(bits));
  const std::size_t step = bits == 8 ? 4 : 8;
  if (group < step || group % step != 0 || group > qgemm::kMaxGroup)
    throw py::value_error("group: expected a multiple of " + std::to_string(step) + " in [" + std::to_string(step) +
                          ", " + std::to_string(qgemm::kMaxGroup) + "], got " + std::to_string(group));
  if (sub == 0 || sub > 64 || (sub > 1 && k % (group * sub) != 0))
    throw py::value_error("sub: expected 1, or up to 64 groups per super-block dividing k = " + std::to_string(k) +
                          " into super-blocks of " + std::to_string(group) + " x sub, got " + std::to_string(sub));
  constexpr std::size_t kLimit = std::size_t{1} << 40;
  if (n >= kLimit || k >= kLimit || !checked_mul(n + qgemm::kStrip, k + 8, kLimit))
    throw py::value_error("n, k: the weight is too large");
  return {bits, n, k, group, sub};
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
  p.sub = s.sub;
  return p;
}

// Entries of the packed float arrays (scale, shift) and of the int8 ones.
std::size_t float_entries(const qgemm::Packed& p) { return p.strips * (p.n_groups / p.sub) * qgemm::kStrip; }
std::size_t int_entries(const qgemm::Packed& p) { return p.sub > 1 ? p.strips * p.n_groups * qgemm::kStrip : 0; }

py::ssize_t ss(std::size_t v) { return static_cast<py::ssize_t>(v); }

void check_disjoint_all(const Array& out, const std::vector<const Array*>& inputs) {
  for (const Array* in : inputs) check_disjoint(out, {in});
}

}  // namespace

void register_qgemm(py::module_& m) {
  m.def("qgemm_sizes", [](int bits, std::size_t n, std::size_t k, std::size_t group, std::size_t sub) {
    const qgemm::Packed p = packed_from(check_shape(bits, n, k, group, sub));
    return py::make_tuple(p.strips * p.strip_bytes(), float_entries(p), int_entries(p), p.kpad, p.n_groups);
  }, py::arg("bits"), py::arg("n"), py::arg("k"), py::arg("group"), py::arg("sub") = 1,
     "(bytes of w, entries of scale and of shift, entries of iscale and ishift, padded k, groups) of a packed n x "
     "k weight.");

  // scale, shift: n x ceil(k / group) float32 (sub 1) or n x (k / group / sub);
  // iscale, ishift: n x (k / group) int8 (sub > 1). shift / ishift: None when
  // absent, and their packed arrays then too.
  m.def("qgemm_pack", [](int bits, py::handle codes, py::handle scale, py::handle shift, py::handle iscale,
                         py::handle ishift, std::size_t group, std::size_t sub, py::handle w, py::handle pscale,
                         py::handle pshift, py::handle piscale, py::handle pishift) {
    const Array ca = check_array(codes, "codes", {DType::i8}, Access::read);
    if (ca.ndim() != 2) throw py::value_error("codes: expected a 2-D (out, in) int8 array, got " + describe(codes));
    const Shape s = check_shape(bits, static_cast<std::size_t>(ca.dim(0)), static_cast<std::size_t>(ca.dim(1)),
                                group, sub);
    const qgemm::Packed p = packed_from(s);
    const std::size_t groups = (s.k + group - 1) / group;
    const std::vector<py::ssize_t> sshape{ca.dim(0), ss(sub > 1 ? groups / sub : groups)};
    const std::vector<py::ssize_t> ishape{ca.dim(0), ss(groups)};
    const std::vector<py::ssize_t> wshape{ss(p.strips * p.strip_bytes())};
    const std::vector<py::ssize_t> fshape{ss(float_entries(p))}, pishape{ss(int_entries(p))};
    const Array sa = check_array(scale, "scale", {DType::f32}, Access::read, &sshape);
    const Array wa = check_array(w, "w", {DType::u8}, Access::write, &wshape);
    const Array pa = check_array(pscale, "packed scale", {DType::f32}, Access::write, &fshape);
    std::vector<const Array*> inputs{&ca, &sa};
    check_disjoint_all(wa, inputs);
    inputs.push_back(&wa);
    check_disjoint_all(pa, inputs);
    inputs.push_back(&pa);
    // the optional pairs (source, packed copy): both arrays or both None
    Array src[3], dst[3];
    const py::handle srcs[3] = {shift, iscale, ishift}, dsts[3] = {pshift, piscale, pishift};
    const char* names[3] = {"shift", "iscale", "ishift"};
    for (int i = 0; i < 3; ++i) {
      if (srcs[i].is_none() != dsts[i].is_none())
        throw py::value_error(std::string(names[i]) + ": expected it and its packed array, or neither");
      const bool wanted = i == 0 ? !shift.is_none() : sub > 1 && (i == 1 || !shift.is_none());
      if (srcs[i].is_none() == wanted)
        throw py::value_error(std::string(names[i]) + (wanted ? ": required" : ": not expected") + " with sub " +
                              std::to_string(sub) + (i == 2 ? " and this shift" : ""));
      if (srcs[i].is_none()) continue;
      const bool f = i == 0;
      src[i] = check_array(srcs[i], names[i], {f ? DType::f32 : DType::i8}, Access::read, f ? &sshape : &ishape);
      dst[i] = check_array(dsts[i], (std::string("packed ") + names[i]).c_str(), {f ? DType::f32 : DType::i8},
                           Access::write, f ? &fshape : &pishape);
      inputs.push_back(&src[i]);
    }
    for (int i = 0; i < 3; ++i)
      if (!srcs[i].is_none()) {
        check_disjoint_all(dst[i], inputs);
        inputs.push_back(&dst[i]);
      }
    const int lo = bits == 8 ? -127 : -(1 << (bits - 1)), hi = bits == 8 ? 127 : (1 << (bits - 1)) - 1;
    const std::int8_t* c = ca.ptr<std::int8_t>();
    for (std::size_t i = 0; i < ca.size(); ++i)
      if (c[i] < lo || c[i] > hi)
        throw py::value_error("codes: expected " + std::to_string(bits) + "-bit codes in [" + std::to_string(lo) +
                              ", " + std::to_string(hi) + "], got " + std::to_string(c[i]) + " at index (" +
                              std::to_string(i / s.k) + ", " + std::to_string(i % s.k) + ")");
    // Field order of qgemm::Source: bits, codes, n, k, group, sub, then the parameter arrays.
    const qgemm::Source in{bits, c, s.n, s.k, group, sub, sa.ptr<float>(),
                           shift.is_none() ? nullptr : src[0].ptr<float>(),
                           iscale.is_none() ? nullptr : src[1].ptr<std::int8_t>(),
                           ishift.is_none() ? nullptr : src[2].ptr<std::int8_t>()};
    py::gil_scoped_release release;
    qgemm::pack(in, wa.mut<std::uint8_t>(), pa.mut<float>(), shift.is_none() ? nullptr : dst[0].mut<float>(),
                iscale.is_none() ? nullptr : dst[1].mut<std::int8_t>(),
                ishift.is_none() ? nullptr : dst[2].mut<std::int8_t>());
  }, py::arg("bits"), py::arg("codes"), py::arg("scale"), py::arg("shift"), py::arg("iscale"), py::arg("ishift"),
     py::arg("group"), py::arg("sub"), py::arg("w"), py::arg("packed_scale"), py::arg("packed_shift"),
     py::arg("packed_iscale"), py::arg("packed_ishift"));

  m.def("qgemm", [](py::handle x, int bits, std::size_t n, std::size_t k, std::size_t group, std::size_t sub,
                    py::handle w, py::handle pscale, py::handle pshift, py::handle piscale, py::handle pishift,
                    int zoff, py::handle bias, py::handle y) {
    qgemm::Packed p = packed_from(check_shape(bits, n, k, group, sub));
    const Array xa = check_array(x, "x", {DType::f32}, Access::read);
    if (k == 0 || xa.size() % k != 0)
      throw py::value_error("x: expected a multiple of " + std::to_string(k) + " elements, got " + describe(x));
    const std::size_t m = xa.size() / k;
    const std::vector<py::ssize_t> wshape{ss(p.strips * p.strip_bytes())};
    const std::vector<py::ssize_t> fshape{ss(float_entries(p))}, ishape{ss(int_entries(p))};
    const Array wa = check_array(w, "w", {DType::u8}, Access::read, &wshape);
    const Array pa = check_array(pscale, "packed scale", {DType::f32}, Access::read, &fshape);
    Array ha, isa, iha;
    if (!pshift.is_none()) ha = check_array(pshift, "packed shift", {DType::f32}, Access::read, &fshape);
    if ((sub > 1) != !piscale.is_none() || (sub > 1 && pshift.is_none() != pishift.is_none()) ||
        (sub == 1 && !pishift.is_none()))
      throw py::value_error("packed_iscale, packed_ishift: expected with sub > 1 (ishift with a shift), got sub " +
                            std::to_string(sub));
    if (!piscale.is_none()) isa = check_array(piscale, "packed iscale", {DType::i8}, Access::read, &ishape);
    if (!pishift.is_none()) iha = check_array(pishift, "packed ishift", {DType::i8}, Access::read, &ishape);
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
      const std::vector<py::ssize_t> bshape{ss(n)};
      ba = check_array(bias, "bias", {DType::f32}, Access::read, &bshape);
      bp = ba.ptr<float>();
      check_disjoint(ya, {&ba});
    }
    check_disjoint(ya, {&xa, &wa, &pa});
    if (!pshift.is_none()) check_disjoint(ya, {&ha});
    if (!piscale.is_none()) check_disjoint(ya, {&isa});
    if (!pishift.is_none()) check_disjoint(ya, {&iha});
    p.w = wa.ptr<std::uint8_t>();
    p.scale = pa.ptr<float>();
    p.shift = pshift.is_none() ? nullptr : ha.ptr<float>();
    p.iscale = piscale.is_none() ? nullptr : isa.ptr<std::int8_t>();
    p.ishift = pishift.is_none() ? nullptr : iha.ptr<std::int8_t>();
    p.zoff = zoff;
    py::gil_scoped_release release;
    qgemm::gemm(xa.ptr<float>(), m, p, bp, ya.mut<float>());
  }, py::arg("x"), py::arg("bits"), py::arg("n"), py::arg("k"), py::arg("group"), py::arg("sub"), py::arg("w"),
     py::arg("packed_scale"), py::arg("packed_shift"), py::arg("packed_iscale"), py::arg("packed_ishift"),
     py::arg("zoff"), py::arg("bias"), py::arg("out"));
}

}  // namespace slimgrad::bind
