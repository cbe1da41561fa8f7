// Bindings of the optimizer steps (slimgrad._core.optim).
//
// step(args, params, grads, masters, states, names, check) validates every
// array of the list first (the buffer contract: dtype, C-contiguity, shape,
// writability, with the caller's names in the messages), then releases the
// GIL and runs one multi-tensor step. Nothing is written unless every check
// passed, and, with check=True, unless every gradient is finite.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "slimgrad/optim.hpp"
#include "slimgrad/optim_extra.hpp"

namespace slimgrad::bind {
namespace {

Storage storage_of(DType d) {
  switch (d) {
    case DType::f32: return Storage::f32;
    case DType::f64: return Storage::f64;
    case DType::f16: return Storage::f16;
    default: return Storage::bf16;
  }
}

// Names come from the descriptor table (optim_table.hpp); only its
// elementwise rows run through step().
Algo parse_algo(const std::string& s) {
  std::string known;
  for (std::size_t i = 0; i < kOptimizerCount; ++i) {
    const OptimDesc& d = kOptimizers[i];
    if (d.kind != OptimKind::elementwise) continue;
    if (s == d.name) return static_cast<Algo>(i);
    known += std::string(known.empty() ? "" : ", ") + d.name;
  }
  throw py::value_error("algo: expected one of " + known + ", got '" + s + "'");
}

const char* name_of(SlotStorage st) {
  switch (st) {
    case SlotStorage::math: return "math";
    case SlotStorage::i8: return "int8";
    case SlotStorage::u8: return "uint8";
    case SlotStorage::blocks: return "blocks";
    case SlotStorage::row: return "row";
    case SlotStorage::col: return "col";
    default: return "none";
  }
}

const char* name_of(SlotWhen w) {
  switch (w) {
    case SlotWhen::always: return "always";
    case SlotWhen::momentum: return "momentum";
    case SlotWhen::centered: return "centered";
    case SlotWhen::amsgrad: return "amsgrad";
    case SlotWhen::factored: return "factored";
    case SlotWhen::vector: return "vector";
    default: return "never";
  }
}

// The descriptor table as Python data: {name: {"kind", "policy", "options",
// "slots": [(key, storage, when), ...]}} (used slots only, in slot order).
py::dict optimizer_table() {
  py::dict out;
  for (const OptimDesc& d : kOptimizers) {
    py::list slots, options;
    for (const SlotDesc& sd : d.slots)
      if (sd.when != SlotWhen::never) slots.append(py::make_tuple(sd.key, name_of(sd.storage), name_of(sd.when)));
    for (py::handle o : py::str(d.options).attr("split")()) options.append(o);
    py::dict row;
    row["kind"] = d.kind == OptimKind::elementwise ? "elementwise" : "multipass";
    row["policy"] = d.policy == NumericPolicy::bit_exact ? "bit_exact" : "bounded";
    row["options"] = py::tuple(options);
    row["slots"] = py::tuple(slots);
    out[d.name] = row;
  }
  return out;
}

std::string str_at(const py::list& names, std::size_t i) { return py::cast<std::string>(names[i]); }

// The buffer contract's accept path, without allocations: a step over
// hundreds of small arrays checks ~4 arrays per parameter, and check_array
// (which builds dtype and shape objects) would cost more than the update.
// Anything this does not accept goes through check_array, which raises the
// exact error (or accepts an unusual but valid array).
struct Quick {
  int type_num;
  const py::ssize_t* dims;
  int nd;
};

bool quick_ok(py::handle obj, const Quick& q, Access access) {
  if (!py::isinstance<py::array>(obj)) return false;
  const auto* a = py::detail::array_proxy(obj.ptr());
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  using api = py::detail::npy_api;
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "quick_ok assumes a little-endian host");
  if (d->type_num != q.type_num || d->byteorder == '>') return false;
  if (!(a->flags & api::NPY_ARRAY_C_CONTIGUOUS_)) return false;
  if (access == Access::write && !(a->flags & api::NPY_ARRAY_WRITEABLE_)) return false;
  if (a->nd != q.nd) return false;
  for (int i = 0; i < q.nd; ++i)
    if (a->dimensions[i] != q.dims[i]) return false;
  return true;
}

void* data_of(py::handle obj) { return py::detail::array_proxy(obj.ptr())->data; }

int type_num_of(py::handle obj) {
  return py::detail::array_descriptor_proxy(py::detail::array_proxy(obj.ptr())->descr)->type_num;
}

// The checked arrays of one step, as Slots.
struct Checked {
  std::vector<py::object> keep;  // references held while the GIL is released
  std::vector<Slot> slots;
  Storage storage = Storage::f32;
};

// Checks obj (quick path, else the full contract) and returns its data pointer.
void* checked(py::handle obj, const py::list& names, std::size_t i, const Quick& q, std::initializer_list<DType> dt,
              Access access, Checked& c) {
  if (!quick_ok(obj, q, access)) {
    const std::vector<py::ssize_t> shape(q.dims, q.dims + q.nd);
    check_array(obj, str_at(names, i), dt, access, &shape);
  }
  c.keep.push_back(py::reinterpret_borrow<py::object>(obj));
  return data_of(obj);
}

// The byte ranges of one step's buffers (ids: kind * n + slot, kind 0 param,
// 1 grad, 2 master, 3 + j state slot j: messages name params first), for
// check_no_overlap (buffers.hpp).
std::vector<ByteRange> step_ranges(const std::vector<Slot>& slots, std::size_t es, std::size_t ss) {
  std::vector<ByteRange> r;
  r.reserve(slots.size() * 5);
  const auto add = [&r](const void* p, std::size_t bytes, bool written, std::size_t id) {
    if (p != nullptr && bytes > 0) {
      const auto b = reinterpret_cast<std::uintptr_t>(p);
      r.push_back({b, b + bytes, written, id});
    }
  };
  const std::size_t n = slots.size();
  for (std::size_t i = 0; i < n; ++i) {
    const Slot& s = slots[i];
    add(s.p, s.n * es, true, i);
    add(s.g, s.n * es, false, n + i);
    add(s.master, s.n * 4, true, 2 * n + i);
    for (std::size_t j = 0; j < 3; ++j) add(s.s[j], s.n * ss, true, (3 + j) * n + i);
  }
  return r;
}

// names = (param_names, grad_names, master_names or None, [state_names per state])
Checked check_lists(const StepArgs& args, const py::list& params, const py::list& grads,
                    const py::object& masters, const py::list& states, const py::tuple& names) {
  const std::size_t n = params.size();
  if (names.size() != 4) throw py::value_error("names: expected (params, grads, masters, states) labels");
  const py::list pn = names[0], gn = names[1];
  const py::list sn = names[3];
  if (grads.size() != n)
    throw py::value_error("grads: expected " + std::to_string(n) + " arrays, got " + std::to_string(grads.size()));
  int used[3];
  const int ns = state_slots(args, used);
  if (static_cast<int>(states.size()) != ns)
    throw py::value_error("states: expected " + std::to_string(ns) + " state lists for these options, got " +
                          std::to_string(states.size()));
  std::vector<py::list> sl(ns), sln(ns);
  for (int k = 0; k < ns; ++k) {
    sl[k] = states[k];
    sln[k] = sn[k];
    if (sl[k].size() != n) throw py::value_error("states: expected " + std::to_string(n) + " arrays per state");
  }
  Checked c;
  c.keep.reserve(n * (3 + ns));
  c.slots.resize(n);
  if (n == 0) return c;
  // The first param fixes the list's dtype (the Python layer buckets by dtype).
  const Array first = check_array(params[0], str_at(pn, 0), {DType::f32, DType::f64, DType::f16, DType::bf16},
                                  Access::write);
  c.storage = storage_of(first.dtype);
  const bool half = c.storage == Storage::f16 || c.storage == Storage::bf16;
  if (args.bf16_state && c.storage == Storage::f64)
    throw py::value_error("state_dtype: bfloat16 state needs float32, float16 or bfloat16 params, got float64 " +
                          str_at(pn, 0));
  const DType pd = first.dtype;
  const DType sd = args.bf16_state ? DType::bf16 : half ? DType::f32 : first.dtype;
  const int p_num = type_num_of(params[0]);
  const int s_num = args.bf16_state ? bfloat16_num() : half ? py::dtype::of<float>().num() : p_num;
  const int m_num = py::dtype::of<float>().num();
  const bool use_master = half && args.master_weights;
  py::list ml, mn;
  if (use_master) {
    if (masters.is_none()) throw py::value_error("masters: float16/bfloat16 params need float32 master copies");
    ml = masters;
    mn = names[2];
    if (ml.size() != n) throw py::value_error("masters: expected " + std::to_string(n) + " arrays");
  } else if (!masters.is_none()) {
    throw py::value_error(half ? "masters: expected None with master_weights=False"
                               : "masters: expected None for float32/float64 params");
  }
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const py::handle ph = params[i];
    // A param's shape is its own: only its type is checked before reading it.
    if (!py::isinstance<py::array>(ph)) check_array(ph, str_at(pn, i), {pd}, Access::write);
    const auto* pa = py::detail::array_proxy(ph.ptr());
    const Quick q{p_num, pa->dimensions, pa->nd};
    Slot& s = c.slots[i];
    s.p = checked(ph, pn, i, q, {pd}, Access::write, c);
    s.g = checked(grads[i], gn, i, q, {pd}, Access::read, c);
    std::size_t size = 1;
    for (int d = 0; d < pa->nd; ++d) size *= static_cast<std::size_t>(pa->dimensions[d]);
    s.n = size;
    s.offset = offset;
    offset += size;
    const Quick qs{s_num, pa->dimensions, pa->nd};
    const Quick qm{m_num, pa->dimensions, pa->nd};
    if (use_master) s.master = static_cast<float*>(checked(ml[i], mn, i, qm, {DType::f32}, Access::write, c));
    for (int k = 0; k < ns; ++k) s.s[used[k]] = checked(sl[k][i], sln[k], i, qs, {sd}, Access::write, c);
  }
  const std::size_t es = half ? 2 : c.storage == Storage::f64 ? 8 : 4;
  const std::size_t ss = args.bf16_state ? 2 : half ? 4 : es;
  // Issue 17: params, masters and states are written while the gradients
  // are read, element by element over threads; shared memory between any two
  // would make the result depend on the order of the writes.
  check_no_overlap(step_ranges(c.slots, es, ss), [&](std::size_t id) {
    const std::size_t i = id % c.slots.size(), kind = id / c.slots.size();
    if (kind == 0) return str_at(pn, i);
    if (kind == 1) return str_at(gn, i);
    if (kind == 2) return str_at(names[2], i);
    for (int k = 0; k < ns; ++k)
      if (static_cast<std::size_t>(used[k]) == kind - 3) return str_at(sln[k], i);
    return std::string("?");
  });
  return c;
}

// A read-only list of gradients of any parameter dtype (mixed allowed).
struct Grads {
  std::vector<const void*> ptr;
  std::vector<std::size_t> size;
  std::vector<Storage> storage;
};

Grads check_grads(const py::list& arrays, const py::object& names) {
  Grads g;
  const std::size_t n = arrays.size();
  g.ptr.reserve(n);
  g.size.reserve(n);
  g.storage.reserve(n);
  const int f32 = py::dtype::of<float>().num(), f64 = py::dtype::of<double>().num(), bf = bfloat16_num();
  const int f16 = py::dtype("float16").num();
  using api = py::detail::npy_api;
  for (std::size_t i = 0; i < n; ++i) {
    const py::handle obj = arrays[i];
    bool ok = py::isinstance<py::array>(obj);
    if (ok) {
      const auto* a = py::detail::array_proxy(obj.ptr());
      const auto* d = py::detail::array_descriptor_proxy(a->descr);
      const int t = d->type_num;
      ok = (t == f32 || t == f64 || t == f16 || t == bf) && d->byteorder != '>' &&
           (a->flags & api::NPY_ARRAY_C_CONTIGUOUS_);
      if (ok) {
        std::size_t size = 1;
        for (int k = 0; k < a->nd; ++k) size *= static_cast<std::size_t>(a->dimensions[k]);
        g.ptr.push_back(a->data);
        g.size.push_back(size);
        g.storage.push_back(t == f32 ? Storage::f32 : t == f64 ? Storage::f64 : t == f16 ? Storage::f16 : Storage::bf16);
        continue;
      }
    }
    // Not accepted above: the full check raises the precise error (or accepts
    // an unusual but valid array, e.g. a non-native-but-equal descriptor).
    const std::string label = names.is_none() ? "arrays[" + std::to_string(i) + "]"
                                              : py::cast<std::string>(py::list(names)[i]);
    const Array a = check_array(obj, label, {DType::f32, DType::f64, DType::f16, DType::bf16}, Access::read);
    g.ptr.push_back(a.ptr<void>());
    g.size.push_back(a.size());
    g.storage.push_back(storage_of(a.dtype));
  }
  return g;
}

// Runs of equal dtype, in list order: [begin, end) index pairs.
std::vector<std::pair<std::size_t, std::size_t>> runs_of(const Grads& g) {
  std::vector<std::pair<std::size_t, std::size_t>> runs;
  for (std::size_t b = 0, e; b < g.ptr.size(); b = e) {
    for (e = b; e < g.ptr.size() && g.storage[e] == g.storage[b];) ++e;
    runs.emplace_back(b, e);
  }
  return runs;
}

// The first NaN/inf in list order.
bool first_nonfinite(const Grads& g, std::size_t* bad_array, std::size_t* bad_index) {
  for (const auto& [b, e] : runs_of(g))
    if (find_nonfinite_multi(g.storage[b], g.ptr.data() + b, g.size.data() + b, e - b, bad_array, bad_index)) {
      *bad_array += b;
      return true;
    }
  return false;
}

// The total norm of one dtype's arrays (the pieces of plan_work, partials in
// piece order: clip_grad_norm's reduction).
double dtype_norm(Storage st, const std::vector<const void*>& ptr, const std::vector<std::size_t>& size,
                  double norm_type) {
  if (st == Storage::f32) {
    std::vector<const float*> x(ptr.size());
    for (std::size_t i = 0; i < ptr.size(); ++i) x[i] = static_cast<const float*>(ptr[i]);
    return total_norm<float>(x.data(), size.data(), x.size(), norm_type);
  }
  if (st == Storage::f64) {
    std::vector<const double*> x(ptr.size());
    for (std::size_t i = 0; i < ptr.size(); ++i) x[i] = static_cast<const double*>(ptr[i]);
    return total_norm<double>(x.data(), size.data(), x.size(), norm_type);
  }
  std::vector<const std::uint16_t*> x(ptr.size());
  for (std::size_t i = 0; i < ptr.size(); ++i) x[i] = static_cast<const std::uint16_t*>(ptr[i]);
  return total_norm_half(x.data(), size.data(), x.size(), norm_type, st == Storage::bf16);
}

// torch.nn.utils.clip_grad_norm_'s total over arrays of several dtypes: one
// norm per dtype (arrays of that dtype in list order, dtypes in order of
// first appearance), then the norm of those norms, as the Python code
// sum(n ** p) ** (1 / p) computes it (max for inf, NaN winning).
double grads_total_norm(const Grads& g, double norm_type) {
  std::vector<Storage> order;
  for (Storage st : g.storage)
    if (std::find(order.begin(), order.end(), st) == order.end()) order.push_back(st);
  std::vector<double> norms;
  for (Storage st : order) {
    std::vector<const void*> ptr;
    std::vector<std::size_t> size;
    for (std::size_t i = 0; i < g.ptr.size(); ++i)
      if (g.storage[i] == st) {
        ptr.push_back(g.ptr[i]);
        size.push_back(g.size[i]);
      }
    norms.push_back(dtype_norm(st, ptr, size, norm_type));
  }
  if (norms.empty()) return 0.0;
  if (norms.size() == 1) return norms[0];
  if (std::isinf(norm_type)) {
    double m = norms[0];
    for (double v : norms) {
      if (std::isnan(v)) return v;
      m = v > m ? v : m;
    }
    return m;
  }
  double sum = 0.0;
  for (double v : norms) sum += std::pow(v, norm_type);
  return std::pow(sum, 1.0 / norm_type);
}

}  // namespace

void register_optim(py::module_& m) {
  py::class_<StepArgs> args(m, "StepArgs", "Options and step count of one multi-tensor step (see optim.hpp).");
  args.def(py::init<>())
      .def_property(
          "algo", [](const StepArgs& a) { return std::string(describe(a.algo).name); },
          [](StepArgs& a, const std::string& s) { a.algo = parse_algo(s); })
      .def_readonly("c3", &StepArgs::c3);  // NAdam's new mu product, read back by Python
  // One read-write attribute per option, same name (optim_table.hpp).
#define SLIMGRAD_STEP_ATTR(type, name, value, doc) args.def_readwrite(#name, &StepArgs::name);
  SLIMGRAD_STEP_OPTIONS(SLIMGRAD_STEP_ATTR)
#undef SLIMGRAD_STEP_ATTR

  m.def("optimizers", &optimizer_table,
        "The optimizer descriptor table (optim_table.hpp): name -> kind, numeric policy, options, "
        "state slots (key, storage, when).");

  m.def("state_count", [](const StepArgs& a) { int used[3]; return state_slots(a, used); }, py::arg("args"));

  m.def(
      "step",
      [](StepArgs& args, const py::list& params, const py::list& grads, const py::object& masters,
         const py::list& states, const py::tuple& names, bool check) -> py::object {
        Checked c = check_lists(args, params, grads, masters, states, names);
        args.storage = c.storage;
        step_constants(args);
        std::size_t bad_slot = 0, bad_index = 0;
        bool ok;
        {
          py::gil_scoped_release release;  // every array is referenced by c.keep
          ok = optim_step(args, c.slots.data(), c.slots.size(), check, &bad_slot, &bad_index);
        }
        if (ok) return py::none();
        return py::make_tuple(bad_slot, bad_index);
      },
      py::arg("args"), py::arg("params"), py::arg("grads"), py::arg("masters"), py::arg("states"),
      py::arg("names"), py::arg("check"),
      "One fused multi-tensor step; None, or (array, index) of the first non-finite gradient "
      "(then nothing was written).");

  m.def(
      "check_step",
      [](const StepArgs& args, const py::list& params, const py::list& grads, const py::object& masters,
         const py::list& states, const py::tuple& names) { check_lists(args, params, grads, masters, states, names); },
      py::arg("args"), py::arg("params"), py::arg("grads"), py::arg("masters"), py::arg("states"), py::arg("names"),
      "The buffer checks of step() alone.");

  m.def(
      "find_nonfinite_multi",
      [](const py::list& arrays) -> py::object {
        const Grads g = check_grads(arrays, py::none());
        std::size_t bad_array = 0, bad_index = 0;
        bool found;
        {
          py::gil_scoped_release release;
          found = first_nonfinite(g, &bad_array, &bad_index);
        }
        if (!found) return py::none();
        return py::make_tuple(bad_array, bad_index);
      },
      py::arg("arrays"), "(array, flat index) of the first NaN/inf in a list of arrays, or None.");

  m.def(
      "check_no_overlap",
      [](const py::list& written, const py::list& read, const py::list& names) {
        // Checks of the multipass optimizers' buffers before their first kernel call.
        std::vector<ByteRange> ranges;
        std::size_t id = 0;
        for (const py::list* l : {&written, &read})
          for (py::handle h : *l) {
            const auto a = py::reinterpret_borrow<py::array>(h);
            const auto b = reinterpret_cast<std::uintptr_t>(a.data());
            ranges.push_back({b, b + static_cast<std::uintptr_t>(a.nbytes()), l == &written, id++});
          }
        if (names.size() != id) throw py::value_error("names: expected one name per array");
        check_no_overlap(std::move(ranges), [&](std::size_t i) { return str_at(names, i); });
      },
      py::arg("written"), py::arg("read"), py::arg("names"),
      "ValueError naming both if two written arrays, or a read and a written one, share memory "
      "(names: written then read).");

  m.def(
      "grad_norm",
      [](const py::list& grads, const py::object& names, double norm_type) -> py::tuple {
        if (!(norm_type > 0.0))
          throw py::value_error("norm_type: expected a number > 0 or inf, got " + std::to_string(norm_type));
        const Grads g = check_grads(grads, names);
        double total;
        std::size_t bad_array = 0, bad_index = 0;
        bool found = false;
        {
          py::gil_scoped_release release;
          total = grads_total_norm(g, norm_type);
          // A finite total proves every element finite; otherwise look for
          // the first bad element (a float64 total may also overflow).
          if (!std::isfinite(total)) found = first_nonfinite(g, &bad_array, &bad_index);
        }
        if (!found) return py::make_tuple(total, py::none());
        return py::make_tuple(total, py::make_tuple(bad_array, bad_index));
      },
      py::arg("grads"), py::arg("names"), py::arg("norm_type"),
      "(total norm, None or (array, index) of the first NaN/inf): one read of a list of "
      "float32/float64/float16/bfloat16 arrays (see optim/_clip.py).");
}

}  // namespace slimgrad::bind
