// Bindings of the quant kernels (slimgrad._core.quant).
#include "buffers.hpp"

namespace slimgrad::bind {

void register_quant(py::module_& m) { (void)m; }

}  // namespace slimgrad::bind
