// Quantized products for avx2: instantiations of kernels_quant_matmul_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt). The
// dequantization reused by the batched path is called from
// kernels_quant_<isa>.cpp (not inlined here), so contraction rules stay there.
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 reports its own AVX-512 intrinsics (`__Y = __Y`) as uninitialized.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "kernels_quant_matmul_simd.hpp"

namespace slimgrad::kernels {
template void qmatmul_rows<Isa::avx2>(const QMatmulArgs&, std::size_t, std::size_t, float*);
template void matmul_s8_cols<Isa::avx2>(const std::int8_t*, std::size_t, const std::int8_t*, std::size_t,
                                        std::size_t, std::size_t, const std::int32_t*, std::int32_t*, std::size_t,
                                        std::int16_t*);
}  // namespace slimgrad::kernels
