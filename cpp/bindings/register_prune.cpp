// Bindings of the prune kernels (slimgrad._core.prune).
//
// Masks are returned as new bool arrays, allocated here with the GIL held;
// inputs are only read, except in apply_masks_, which zeroes in place. Every
// argument is checked before any work, so an error changes nothing.
#include <optional>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "buffers.hpp"
#include "outputs.hpp"
#include "slimgrad/prune.hpp"

namespace slimgrad::bind {
namespace {

std::string index_str(std::size_t flat, const std::vector<py::ssize_t>& shape) {
  std::vector<py::ssize_t> idx(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    idx[d] = static_cast<py::ssize_t>(flat % static_cast<std::size_t>(shape[d]));
    flat /= static_cast<std::size_t>(shape[d]);
  }
  return shape_str(idx);
}

[[noreturn]] void raise_nan(const Array& a, std::size_t flat) {
  throw py::value_error(a.name + ": NaN at index " + index_str(flat, a.shape()) + " (flat index " +
                        std::to_string(flat) + "); NaN weights have no magnitude to rank");
}

py::array new_mask(const Array& like) { return new_output(py::dtype("bool"), like.shape()); }

// The float dtypes of the prune area: the selections read them in place
// (float16 and bfloat16 as their bits, no float32 copy), the Pruner zeroes
// weights and moments of them in place.
const std::initializer_list<DType> kFloatDtypes = {DType::f16, DType::bf16, DType::f32, DType::f64};

// f(T{}) for the element type T of dtype d (one of kFloatDtypes).
template <class F>
decltype(auto) with_element_type(DType d, F&& f) {
  switch (d) {
    case DType::f32:
      return f(float{});
    case DType::f64:
      return f(double{});
    case DType::f16:
      return f(Float16{});
    default:
      return f(BFloat16{});
  }
}

// The arguments of a selection, checked: the arrays (one dtype) into ws,
// their prior masks (when priors is not None) into ps; k at most their
// total size, which is returned.
std::size_t check_selection(py::sequence arrays, py::sequence names, std::size_t k, py::object priors,
                            std::vector<Array>& ws, std::vector<Array>& ps) {
  const std::size_t count = py::len(arrays);
  if (py::len(names) != count) throw py::value_error("names: expected one name per array");
  const bool have_priors = !priors.is_none();
  if (have_priors && py::len(priors) != count) throw py::value_error("priors: expected one mask per array");
  std::size_t total = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const std::string name = py::str(names[i]);
    if (i == 0)
      ws.push_back(check_array(arrays[i], name, kFloatDtypes, Access::read));
    else  // one key width for the whole selection
      ws.push_back(check_array(arrays[i], name, {ws[0].dtype}, Access::read));
    if (have_priors) {
      const auto shape = ws.back().shape();
      ps.push_back(check_array(priors.cast<py::sequence>()[i], "prior " + name, {DType::boolean}, Access::read, &shape));
    }
    total += ws.back().size();
  }
  if (k > total)
    throw py::value_error("k: expected at most " + std::to_string(total) + " (the number of weights), got " +
                          std::to_string(k));
  return total;
}

// magnitude_keep(arrays, names, k, priors) -> list of bool masks (True = kept)
py::list magnitude_keep_py(py::sequence arrays, py::sequence names, std::size_t k, py::object priors) {
  std::vector<Array> ws, ps;
  const std::size_t total = check_selection(arrays, names, k, priors, ws, ps);
  const std::size_t count = ws.size();
  const bool have_priors = !priors.is_none();
  // Several masks are views into one buffer: one allocation instead of one
  // per array, which for many mid-sized arrays saves more time (fresh pages
  // faulted in one by one) than the selection itself takes.
  py::list out;
  std::vector<PruneSegment> segments;
  py::array flat = count == 1 ? new_mask(ws[0])
                              : new_output(py::dtype("bool"), {static_cast<py::ssize_t>(total)});
  auto* base = static_cast<std::uint8_t*>(flat.mutable_data());
  std::size_t offset = 0;
  for (std::size_t i = 0; i < count; ++i) {
    segments.push_back({ws[i].arr.data(), have_priors ? ps[i].ptr<std::uint8_t>() : nullptr, ws[i].size(),
                        base + offset});
    if (count == 1) {
      out.append(flat);
    } else {
      const auto begin = static_cast<py::ssize_t>(offset), end = static_cast<py::ssize_t>(offset + ws[i].size());
      const auto shape = ws[i].shape();
      py::tuple dims(shape.size());
      for (std::size_t d = 0; d < shape.size(); ++d) dims[d] = py::int_(shape[d]);
      out.append(flat[py::slice(begin, end, 1)].attr("reshape")(dims));
    }
    offset += ws[i].size();
  }
  NanPosition nan;
  {
    py::gil_scoped_release release;  // ws, ps and out hold every buffer for the call
    if (count > 0)
      nan = with_element_type(ws[0].dtype, [&](auto t) { return magnitude_keep<decltype(t)>(segments, k); });
  }
  if (nan.found) raise_nan(ws[nan.segment], nan.index);
  return out;
}

// magnitude_counts(arrays, names, k) -> list of counts: the global selection
// of k as one count per array (magnitude_counts in prune.hpp).
py::list magnitude_counts_py(py::sequence arrays, py::sequence names, std::size_t k) {
  std::vector<Array> ws, ps;
  check_selection(arrays, names, k, py::none(), ws, ps);
  std::vector<PruneSegment> segments;
  for (const Array& w : ws) segments.push_back({w.arr.data(), nullptr, w.size(), nullptr});
  std::vector<std::size_t> counts;
  NanPosition nan;
  {
    py::gil_scoped_release release;  // ws holds every buffer for the call
    if (!ws.empty())
      nan = with_element_type(ws[0].dtype, [&](auto t) { return magnitude_counts<decltype(t)>(segments, k, counts); });
  }
  if (nan.found) raise_nan(ws[nan.segment], nan.index);
  py::list out;
  for (const std::size_t c : counts) out.append(c);
  return out;
}

// nm_keep(w, name, inner, n, m) -> bool mask; w is viewed as (rows, m, inner).
py::array nm_keep_py(py::handle w, const std::string& name, std::size_t inner, int n, int m) {
  const Array wa = check_array(w, name, kFloatDtypes, Access::read);
  if (m < 1 || n < 0 || n > m) throw py::value_error("n, m: expected 0 <= n <= m and m >= 1");
  const std::size_t row = static_cast<std::size_t>(m) * inner;
  if (row == 0 || wa.size() % row != 0)
    throw py::value_error(name + ": size " + std::to_string(wa.size()) + " is not a whole number of groups of " +
                          std::to_string(m) + " x " + std::to_string(inner));
  py::array out = new_mask(wa);
  auto* keep = static_cast<std::uint8_t*>(out.mutable_data());
  std::ptrdiff_t nan;
  {
    py::gil_scoped_release release;
    nan = with_element_type(wa.dtype, [&](auto t) {
      return nm_keep(wa.ptr<decltype(t)>(), wa.size() / row, inner, n, m, keep);
    });
  }
  if (nan >= 0) raise_nan(wa, static_cast<std::size_t>(nan));
  return out;
}

// The Pruner's weights: zeroed in place, so writable, C-contiguous, native.
Array check_weight(py::handle obj, const std::string& name) {
  return check_array(obj, name, kFloatDtypes, Access::write);
}

bool is_integer_array(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) return false;
  const char kind = py::reinterpret_borrow<py::array>(obj).dtype().kind();
  return kind == 'i' || kind == 'u';
}

// A moment of `w`: a float array of w's shape, or integer codes (8-bit
// optimizers) with one code per element of w, in any shape (code 0 must
// mean 0, so zeroing a code zeroes the moment).
Array check_moment(py::handle obj, const std::string& name, const Array& w) {
  const auto shape = w.shape();
  if (!is_integer_array(obj))
    return check_array(obj, name, kFloatDtypes, Access::write, &shape);
  Array a = check_array(obj, name, {DType::i8, DType::u8, DType::i16, DType::u16, DType::i32, DType::u32, DType::i64,
                                    DType::u64},
                        Access::write);
  if (a.size() != w.size())
    throw py::value_error(name + ": expected integer codes with one element per element of " + w.name + " (" +
                          std::to_string(w.size()) + "), got " + describe(obj));
  return a;
}

// check_weights_(arrays, names): the checks apply_masks_ makes on weights,
// without touching them (the Pruner runs them at construction).
void check_weights_py(py::sequence arrays, py::sequence names) {
  if (py::len(names) != py::len(arrays)) throw py::value_error("names: expected one name per array");
  for (std::size_t i = 0; i < py::len(arrays); ++i) check_weight(arrays[i], py::str(names[i]));
}

// apply_masks_(masks, groups, names): zero groups[i][j] where masks[i] is
// False; groups[i][0] is the weight, the rest its optimizer moments (float
// arrays of its shape or integer codes of its size, see check_moment);
// names[i][j] names groups[i][j] in error messages.
void apply_masks_py(py::sequence masks, py::sequence groups, py::sequence names) {
  const std::size_t count = py::len(masks);
  if (py::len(groups) != count || py::len(names) != count)
    throw py::value_error("masks, groups, names: expected the same length");
  std::vector<Array> held, mask_arrays;
  std::vector<MaskGroup> plan;
  for (std::size_t i = 0; i < count; ++i) {
    const py::sequence arrays = groups[i].cast<py::sequence>();
    const py::sequence labels = names[i].cast<py::sequence>();
    if (py::len(arrays) == 0 || py::len(labels) != py::len(arrays))
      throw py::value_error("groups[" + std::to_string(i) + "]: expected the weight first and one name per array");
    const Array w = check_weight(arrays[0], py::str(labels[0]));
    const auto shape = w.shape();
    const Array m = check_array(masks[i], "mask " + w.name, {DType::boolean}, Access::read, &shape);
    MaskGroup g{m.ptr<std::uint8_t>(), m.size(), {}};
    held.push_back(m);
    mask_arrays.push_back(m);
    for (std::size_t j = 0; j < py::len(arrays); ++j) {
      const Array a = j == 0 ? w : check_moment(arrays[j], py::str(labels[j]), w);
      g.arrays.emplace_back(const_cast<void*>(a.arr.data()), static_cast<int>(a.arr.itemsize()));
      held.push_back(a);
    }
    plan.push_back(std::move(g));
  }
  // zeroing an array that shares bytes with a mask would change the mask while
  // it is read: refused (arrays written twice are fine: zeroing is idempotent)
  for (const Array& a : held)
    if (a.dtype != DType::boolean)
      for (const Array& m : mask_arrays) check_disjoint(a, {&m});
  py::gil_scoped_release release;  // `held` keeps every buffer alive
  apply_masks(plan);
}

// _keys_at_ranks(keys, ranks, bits): the order statistics magnitude
// selection takes of its key sample (keys_at_ranks), for the tests; bits 31
// (float32 keys, held in uint32) or 63 (float64 keys, in uint64).
py::list keys_at_ranks_py(const std::vector<std::uint64_t>& keys, const std::vector<std::size_t>& ranks, int bits) {
  if (bits != 31 && bits != 63) throw py::value_error("bits: expected 31 or 63, got " + std::to_string(bits));
  for (const std::size_t r : ranks)
    if (r >= keys.size())
      throw py::value_error("ranks: expected ranks below len(keys) (" + std::to_string(keys.size()) + "), got " +
                            std::to_string(r));
  py::list out;
  if (bits == 31) {
    std::vector<std::uint32_t> narrow;
    for (const std::uint64_t k : keys) {
      if (k >> 32) throw py::value_error("keys: expected keys below 2**32 for bits=31, got " + std::to_string(k));
      narrow.push_back(static_cast<std::uint32_t>(k));
    }
    for (const std::uint32_t k : keys_at_ranks(narrow, ranks)) out.append(k);
  } else {
    for (const std::uint64_t k : keys_at_ranks(keys, ranks)) out.append(k);
  }
  return out;
}

// _histogram(x, prior, base, prefix, hi, lo, codes) -> (hist, below,
// max_raw, codes or None): one histogram pass over x at the current level
// (histogram_at_level), for the tests.
template <class T>
py::tuple histogram_of(const Array& x, const std::uint8_t* prior, std::uint64_t base, std::uint64_t prefix, int hi,
                       int lo, bool want_codes) {
  std::vector<std::size_t> hist;
  std::size_t below = 0;
  py::object codes = py::none();
  std::uint8_t* out = nullptr;
  if (want_codes) {
    py::array a = py::array_t<std::uint8_t>(static_cast<py::ssize_t>(x.size()));
    out = static_cast<std::uint8_t*>(a.mutable_data());
    codes = a;
  }
  const KeyOf<T> max_raw = histogram_at_level<T>(x.ptr<T>(), prior, x.size(), static_cast<KeyOf<T>>(base),
                                                 static_cast<KeyOf<T>>(prefix), hi, lo, hist, &below, out);
  return py::make_tuple(hist, below, static_cast<std::uint64_t>(max_raw), codes);
}

py::tuple histogram_py(py::handle x, py::object prior, std::uint64_t base, std::uint64_t prefix, int hi, int lo,
                       bool codes) {
  const Array xa = check_array(x, "x", kFloatDtypes, Access::read);
  const int bits = with_element_type(xa.dtype, [](auto t) { return KeyTraits<decltype(t)>::bits; });
  const int most = codes ? kCodeBits : kDigitBits;
  if (lo < 0 || hi < lo || hi - lo > most || hi > bits)
    throw py::value_error("hi, lo: expected 0 <= lo <= hi <= " + std::to_string(bits) + " and hi - lo <= " +
                          std::to_string(most) + ", got " + std::to_string(hi) + ", " + std::to_string(lo));
  if (codes && prefix != 0) throw py::value_error("prefix: expected 0 with codes, got " + std::to_string(prefix));
  const auto shape = xa.shape();
  std::optional<Array> pa;
  if (!prior.is_none()) pa = check_array(prior, "prior", {DType::boolean}, Access::read, &shape);
  const std::uint8_t* p = pa ? pa->ptr<std::uint8_t>() : nullptr;
  return with_element_type(
      xa.dtype, [&](auto t) { return histogram_of<decltype(t)>(xa, p, base, prefix, hi, lo, codes); });
}

// _sample_indices(total): where a selection over `total` keys samples them
// (sample_index), for the tests.
std::vector<std::size_t> sample_indices_py(std::size_t total) {
  if (total < kSampledFrom)
    throw py::value_error("total: expected at least " + std::to_string(kSampledFrom) + ", got " +
                          std::to_string(total));
  std::vector<std::size_t> out;
  for (std::size_t j = 0; j < kSampleKeys; ++j) out.push_back(sample_index(j, total));
  return out;
}

}  // namespace

void register_prune(py::module_& m) {
  m.def("magnitude_keep", &magnitude_keep_py, py::arg("arrays"), py::arg("names"), py::arg("k"),
        py::arg("priors") = py::none());
  m.def("magnitude_counts", &magnitude_counts_py, py::arg("arrays"), py::arg("names"), py::arg("k"));
  m.def("nm_keep", &nm_keep_py, py::arg("w"), py::arg("name"), py::arg("inner"), py::arg("n"), py::arg("m"));
  m.def("apply_masks_", &apply_masks_py, py::arg("masks"), py::arg("groups"), py::arg("names"));
  m.def("check_weights_", &check_weights_py, py::arg("arrays"), py::arg("names"));
  m.def("_histogram", &histogram_py, py::arg("x"), py::arg("prior"), py::arg("base"), py::arg("prefix"),
        py::arg("hi"), py::arg("lo"), py::arg("codes"));
  m.def("_sample_indices", &sample_indices_py, py::arg("total"));
  m.def("_keys_at_ranks", &keys_at_ranks_py, py::arg("keys"), py::arg("ranks"), py::arg("bits"));
}

}  // namespace slimgrad::bind
