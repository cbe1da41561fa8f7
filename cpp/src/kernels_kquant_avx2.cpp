// K-quant kernels for avx2: instantiations of kernels_kquant_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt).
// FP contraction off before any include: the bytes must equal llama.cpp's
// reference, which multiplies then adds.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
// GCC 12 reports its own AVX-512 intrinsics (`__Y = __Y`) as uninitialized
// once an optimize pragma is active: noise, not a defect of this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif
#include "kernels_kquant_simd.hpp"

namespace slimgrad::kernels {
template void kquant_quantize<Isa::avx2>(int, const float*, std::size_t, const float*, void*);
template void kquant_dequantize<Isa::avx2>(int, const void*, std::size_t, float*);
}  // namespace slimgrad::kernels
