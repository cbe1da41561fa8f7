// Core kernels for avx2: instantiations of kernels_core_simd.hpp, compiled
// with this ISA's flags (set per file in CMakeLists.txt).
#include "kernels_core_simd.hpp"

namespace slimgrad::kernels {
template void axpy<Isa::avx2, float>(float*, const float*, float, std::size_t);
template void axpy<Isa::avx2, double>(double*, const double*, double, std::size_t);
template double sum_squares<Isa::avx2, float>(const float*, std::size_t);
template double sum_squares<Isa::avx2, double>(const double*, std::size_t);
template std::size_t find_nonfinite<Isa::avx2, float>(const float*, std::size_t);
template std::size_t find_nonfinite<Isa::avx2, double>(const double*, std::size_t);
template void stream_probe<Isa::avx2>(float*, const float*, float*, float*, std::size_t);
}  // namespace slimgrad::kernels
