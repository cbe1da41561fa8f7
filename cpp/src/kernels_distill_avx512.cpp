// Distillation kernels for avx512: instantiations of kernels_distill_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt).
// GCC 12's avx512fintrin.h fills the pass-through operand of unmasked
// min/max/extract with _mm512_undefined_*(), which -W(maybe-)uninitialized reports
// (a false positive in the compiler's own header).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include "kernels_distill_simd.hpp"

namespace slimgrad::kernels {
template void kd_row_stats<Isa::avx512, float>(const float*, const float*, std::size_t, float, KdRowMode, KdRowStats*);
template void kd_row_stats<Isa::avx512, double>(const double*, const double*, std::size_t, double, KdRowMode, KdRowStats*);
template void kd_row_grad<Isa::avx512, float>(const float*, const float*, float*, std::size_t, const KdGradTerms<float>&, KdRowMode);
template void kd_row_grad<Isa::avx512, double>(const double*, const double*, double*, std::size_t, const KdGradTerms<double>&, KdRowMode);
template double mse_grad<Isa::avx512, float>(const float*, const float*, float*, std::size_t, float);
template double mse_grad<Isa::avx512, double>(const double*, const double*, double*, std::size_t, double);
template void exp<Isa::avx512, float>(const float*, float*, std::size_t);
template void exp<Isa::avx512, double>(const double*, double*, std::size_t);
}  // namespace slimgrad::kernels
