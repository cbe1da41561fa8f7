// Distillation kernels for avx2: instantiations of kernels_distill_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt).
#include "kernels_distill_simd.hpp"

namespace slimgrad::kernels {
template void kd_row_stats<Isa::avx2, float>(const float*, const float*, std::size_t, float, KdRowMode, KdRowStats*);
template void kd_row_stats<Isa::avx2, double>(const double*, const double*, std::size_t, double, KdRowMode, KdRowStats*);
template void kd_row_grad<Isa::avx2, float>(const float*, const float*, float*, std::size_t, const KdGradTerms<float>&, KdRowMode);
template void kd_row_grad<Isa::avx2, double>(const double*, const double*, double*, std::size_t, const KdGradTerms<double>&, KdRowMode);
template double mse_grad<Isa::avx2, float>(const float*, const float*, float*, std::size_t, float);
template double mse_grad<Isa::avx2, double>(const double*, const double*, double*, std::size_t, double);
template void exp<Isa::avx2, float>(const float*, float*, std::size_t);
template void exp<Isa::avx2, double>(const double*, double*, std::size_t);
}  // namespace slimgrad::kernels
