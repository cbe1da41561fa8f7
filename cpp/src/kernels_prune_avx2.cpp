// Prune kernels for avx2: instantiations of kernels_prune_simd.hpp, compiled
// with this ISA's flags (set per file in CMakeLists.txt).
#include "kernels_prune_simd.hpp"

namespace slimgrad::kernels {
#define SLIMGRAD_PRUNE_INSTANTIATE(T)                                                             \
  template KeyOf<T> histogram<Isa::avx2, T>(const T*, const std::uint8_t*, std::size_t, KeyOf<T>, \
                                             KeyOf<T>, int, int, std::uint32_t*, std::size_t*);   \
  template std::size_t count_equal<Isa::avx2, T>(const T*, const std::uint8_t*, std::size_t,       \
                                                 KeyOf<T>);                                       \
  template std::size_t threshold_keep<Isa::avx2, T>(const T*, const std::uint8_t*, std::size_t,  \
                                                   KeyOf<T>, KeyOf<T>, std::uint8_t*, KeyOf<T>*,   \
                                                   std::uint32_t*);                               \
  template void nm_keep<Isa::avx2, T>(const T*, std::size_t, std::size_t, int, int, std::uint8_t*); \
  template std::size_t find_nan<Isa::avx2, T>(const T*, std::size_t);
SLIMGRAD_PRUNE_INSTANTIATE(float)
SLIMGRAD_PRUNE_INSTANTIATE(double)
#undef SLIMGRAD_PRUNE_INSTANTIATE
template void apply_keep<Isa::avx2, std::uint8_t>(std::uint8_t*, const std::uint8_t*, std::size_t);
template void apply_keep<Isa::avx2, std::uint16_t>(std::uint16_t*, const std::uint8_t*, std::size_t);
template void apply_keep<Isa::avx2, std::uint32_t>(std::uint32_t*, const std::uint8_t*, std::size_t);
template void apply_keep<Isa::avx2, std::uint64_t>(std::uint64_t*, const std::uint8_t*, std::size_t);
}  // namespace slimgrad::kernels
