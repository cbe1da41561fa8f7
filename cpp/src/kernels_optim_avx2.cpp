// Optimizer steps for avx2: the instantiation of kernels_optim_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt).
#include "kernels_optim_simd.hpp"

namespace slimgrad::kernels {
template void optim_step<Isa::avx2>(const StepArgs&, const Slot&, std::size_t, std::size_t);
template std::size_t find_nonfinite_half<Isa::avx2>(const std::uint16_t*, std::size_t, bool);
}  // namespace slimgrad::kernels
