// Bindings of the distill kernels (slimgrad._core.distill).
#include "buffers.hpp"

namespace slimgrad::bind {

void register_distill(py::module_& m) { (void)m; }

}  // namespace slimgrad::bind
