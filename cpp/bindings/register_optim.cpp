// Bindings of the optim kernels (slimgrad._core.optim).
#include "buffers.hpp"

namespace slimgrad::bind {

void register_optim(py::module_& m) { (void)m; }

}  // namespace slimgrad::bind
