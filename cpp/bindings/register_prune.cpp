// Bindings of the prune kernels (slimgrad._core.prune).
#include "buffers.hpp"

namespace slimgrad::bind {

void register_prune(py::module_& m) { (void)m; }

}  // namespace slimgrad::bind
