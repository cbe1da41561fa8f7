// The extension module: one register_<area>() per area, each in its own file.
#include "buffers.hpp"

namespace slimgrad::bind {
void register_core(py::module_& m);
void register_optim(py::module_& m);
void register_optim_extra(py::module_& m);
void register_muon_prodigy(py::module_& m);  // into optim
void register_nn(py::module_& m);
void register_prune(py::module_& m);
void register_quant(py::module_& m);
void register_kquant(py::module_& m);
void register_qgemm(py::module_& m);  // into quant
void register_distill(py::module_& m);
void register_gptq(py::module_& m);
void register_transformer(py::module_& m);  // into nn
void register_sparse(py::module_& m);
}  // namespace slimgrad::bind

PYBIND11_MODULE(_core, m) {
  m.doc() = "slimgrad's compiled core. Use the slimgrad package, not this module.";
  using namespace slimgrad::bind;
  register_core(m);
  // One submodule per area, filled by its register_* functions in this order.
  bind_all(m.def_submodule("optim"), {register_optim, register_optim_extra, register_muon_prodigy});
  bind_all(m.def_submodule("nn"), {register_nn, register_transformer});
  bind_all(m.def_submodule("prune"), {register_prune});
  bind_all(m.def_submodule("quant"), {register_quant, register_kquant, register_qgemm});
  bind_all(m.def_submodule("distill"), {register_distill});
  bind_all(m.def_submodule("gptq"), {register_gptq});
  bind_all(m.def_submodule("sparse"), {register_sparse});
}
