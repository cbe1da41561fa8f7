// Bindings of the nn kernels (slimgrad._core.nn).
#include "buffers.hpp"

namespace slimgrad::bind {

void register_nn(py::module_& m) { (void)m; }

}  // namespace slimgrad::bind
