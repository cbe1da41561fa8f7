// Bindings of the optimizer steps (slimgrad._core.optim).
//
// step(args, params, grads, masters, states, names, check) validates every
// array of the list first (the buffer contract: dtype, C-contiguity, shape,
// writability, with the caller's names in the messages), then releases the
// GIL and runs one multi-tensor step. Nothing is written unless every check
// passed, and, with check=True, unless every gradient is finite.
#include <stdexcept>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "slimgrad/optim.hpp"

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
  return c;
}

}  // namespace

void register_optim(py::module_& m) {
  py::class_<StepArgs>(m, "StepArgs", "Options and step count of one multi-tensor step (see optim.hpp).")
      .def(py::init<>())
      .def_property(
          "algo", [](const StepArgs& a) { return std::string(describe(a.algo).name); },
          [](StepArgs& a, const std::string& s) { a.algo = parse_algo(s); })
      .def_readwrite("stochastic", &StepArgs::stochastic)
      .def_readwrite("bf16_state", &StepArgs::bf16_state)
      .def_readwrite("master_weights", &StepArgs::master_weights)
      .def_readwrite("seed", &StepArgs::seed)
      .def_readwrite("step", &StepArgs::step)
      .def_readwrite("lr", &StepArgs::lr)
      .def_readwrite("weight_decay", &StepArgs::weight_decay)
      .def_readwrite("eps", &StepArgs::eps)
      .def_readwrite("beta1", &StepArgs::beta1)
      .def_readwrite("beta2", &StepArgs::beta2)
      .def_readwrite("alpha", &StepArgs::alpha)
      .def_readwrite("rho", &StepArgs::rho)
      .def_readwrite("momentum", &StepArgs::momentum)
      .def_readwrite("dampening", &StepArgs::dampening)
      .def_readwrite("lr_decay", &StepArgs::lr_decay)
      .def_readwrite("momentum_decay", &StepArgs::momentum_decay)
      .def_readwrite("mu_product", &StepArgs::mu_product)
      .def_readwrite("lambd", &StepArgs::lambd)
      .def_readwrite("eta", &StepArgs::eta)
      .def_readwrite("mu", &StepArgs::mu)
      .def_readwrite("etaminus", &StepArgs::etaminus)
      .def_readwrite("etaplus", &StepArgs::etaplus)
      .def_readwrite("step_size_min", &StepArgs::step_size_min)
      .def_readwrite("step_size_max", &StepArgs::step_size_max)
      .def_readwrite("ckp1", &StepArgs::ckp1)
      .def_readwrite("maximize", &StepArgs::maximize)
      .def_readwrite("nesterov", &StepArgs::nesterov)
      .def_readwrite("amsgrad", &StepArgs::amsgrad)
      .def_readwrite("centered", &StepArgs::centered)
      .def_readwrite("decoupled", &StepArgs::decoupled)
      .def_readonly("c3", &StepArgs::c3);

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
        // Runs of equal dtype are scanned in one call each, in list order.
        std::vector<Array> keep;
        keep.reserve(arrays.size());
        for (std::size_t i = 0; i < arrays.size(); ++i)
          keep.push_back(check_array(arrays[i], "arrays[" + std::to_string(i) + "]",
                                     {DType::f32, DType::f64, DType::f16, DType::bf16}, Access::read));
        std::size_t bad_array = 0, bad_index = 0;
        bool found = false;
        {
          py::gil_scoped_release release;
          std::size_t b = 0;
          while (b < keep.size() && !found) {
            std::size_t e = b;
            std::vector<const void*> ptrs;
            std::vector<std::size_t> sizes;
            while (e < keep.size() && keep[e].dtype == keep[b].dtype) {
              ptrs.push_back(keep[e].ptr<void>());
              sizes.push_back(keep[e].size());
              ++e;
            }
            if (find_nonfinite_multi(storage_of(keep[b].dtype), ptrs.data(), sizes.data(), ptrs.size(),
                                     &bad_array, &bad_index)) {
              bad_array += b;
              found = true;
            }
            b = e;
          }
        }
        if (!found) return py::none();
        return py::make_tuple(bad_array, bad_index);
      },
      py::arg("arrays"), "(array, flat index) of the first NaN/inf in a list of arrays, or None.");
}

}  // namespace slimgrad::bind
