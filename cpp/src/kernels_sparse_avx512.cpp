// Sparse product kernels for avx512: instantiations of kernels_sparse_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt).
#include "kernels_sparse_simd.hpp"

namespace slimgrad::kernels {
template void gemm24_rows<Isa::avx512>(const float*, std::size_t, std::size_t, const float*, const std::uint8_t*,
                                     std::size_t, std::size_t, std::size_t, float*);
template void spmm_csr_rows<Isa::avx512, std::int32_t>(const float*, std::size_t, std::size_t, const float*,
                                                    const std::int32_t*, const std::int32_t*, std::size_t,
                                                    std::size_t, std::size_t, float*);
template void spmm_csr_rows<Isa::avx512, std::int64_t>(const float*, std::size_t, std::size_t, const float*,
                                                    const std::int32_t*, const std::int64_t*, std::size_t,
                                                    std::size_t, std::size_t, float*);
}  // namespace slimgrad::kernels
