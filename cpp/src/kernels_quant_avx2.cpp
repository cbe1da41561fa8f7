// Quantization kernels for avx2: instantiations of kernels_quant_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt).
// FP contraction off before any include: the quantizers promise the exact
// multiply-then-add of the scalar oracle (and of torch / the gguf package);
// explicit fma intrinsics (the matmul kernels) are unaffected.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
// GCC 12 reports its own AVX-512 intrinsics (`__Y = __Y`) as uninitialized
// once an optimize pragma is active: noise, not a defect of this file.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#elif defined(__clang__)
#pragma clang fp contract(off)
#endif
#include "kernels_quant_simd.hpp"

namespace slimgrad::kernels {
template std::size_t quant_minmax<Isa::avx2>(const float*, std::size_t, float*, float*);
template void quant_codes<Isa::avx2>(const float*, std::size_t, float, float, bool, float, float, float, int,
                                    std::uint64_t, std::uint64_t, std::uint8_t*);
template std::size_t quant_groups<Isa::avx2>(const float*, std::size_t, std::size_t, int, bool, int, std::uint64_t,
                                              std::uint64_t, float*, std::int32_t*, std::uint8_t*);
template void quant_dequant<Isa::avx2>(const std::uint8_t*, bool, std::size_t, float, float, float*);
template void quant_pack<Isa::avx2>(const std::uint8_t*, std::size_t, int, std::uint8_t*);
template void quant_unpack<Isa::avx2>(const std::uint8_t*, std::size_t, int, bool, std::uint8_t*);
template void gguf_quantize<Isa::avx2>(int, const float*, std::size_t, std::uint8_t*);
template void gguf_dequantize<Isa::avx2>(int, const std::uint8_t*, std::size_t, float*);
}  // namespace slimgrad::kernels
