// Sparse product kernels for scalar: instantiations of kernels_sparse_simd.hpp,
// compiled with this ISA's flags (set per file in CMakeLists.txt).
// The scalar file is the oracle: the portable path, built without FMA contraction.
#include "kernels_sparse_simd.hpp"

namespace slimgrad::kernels {
template std::size_t gemm24_panel_width<Isa::scalar>();
template void pack_panel<Isa::scalar>(const float*, std::size_t, std::size_t, std::size_t, std::size_t, float*);
template void gemm24_rows<Isa::scalar>(const float*, const float*, std::size_t, std::size_t, const float*,
                                     const std::uint8_t*, std::size_t, std::size_t, std::size_t, float*);
template void gemm24_slices_rows<Isa::scalar>(const float*, const float*, bool, std::size_t, std::size_t,
                                             const float*, const std::uint32_t*, std::size_t, std::size_t,
                                             std::size_t, float*);
template void spmm_slices_rows<Isa::scalar>(const float*, std::size_t, std::size_t, bool, const float*,
                                           const std::uint8_t*, const std::int32_t*, const std::int64_t*,
                                           const std::int32_t*, std::size_t, std::size_t, std::size_t, float*);
template void spmm_csr_rows<Isa::scalar, std::int32_t>(const float*, std::size_t, std::size_t, const float*,
                                                    const std::int32_t*, const std::int32_t*, std::size_t,
                                                    std::size_t, std::size_t, float*);
template void spmm_csr_rows<Isa::scalar, std::int64_t>(const float*, std::size_t, std::size_t, const float*,
                                                    const std::int32_t*, const std::int64_t*, std::size_t,
                                                    std::size_t, std::size_t, float*);
}  // namespace slimgrad::kernels
