// Optimizer steps for avx512: the instantiation of kernels_optim_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt).
// GCC 12 reports '__Y may be used uninitialized' inside avx512fintrin.h for
// _mm512_sqrt/_div (its _mm512_undefined_* idiom): a false positive in the
// system header, silenced for this file only.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include "kernels_optim_simd.hpp"

namespace slimgrad::kernels {
template void optim_step<Isa::avx512>(const StepArgs&, const Slot&, std::size_t, std::size_t);
template std::size_t find_nonfinite_half<Isa::avx512>(const std::uint16_t*, std::size_t, bool);
}  // namespace slimgrad::kernels
