// Extra optimizer kernels for avx2: instantiations of
// kernels_optim_extra_simd.hpp, compiled with this ISA's flags (per file, by name).
#include "kernels_optim_extra_simd.hpp"

namespace slimgrad::kernels {
#define SLIMGRAD_EXTRA_INST(T)                                                                                  \
  template void lion<Isa::avx2, T>(T*, const T*, T*, std::size_t, const LionCoef<T>&);                          \
  template void lamb_moments<Isa::avx2, T>(const T*, const T*, T*, T*, std::size_t, const LambCoef<T>&,          \
                                           double*);                                                            \
  template void lamb_apply<Isa::avx2, T>(T*, const T*, const T*, std::size_t, const LambCoef<T>&, T);           \
  template void adamw8bit<Isa::avx2, T>(T*, const T*, std::int8_t*, std::uint8_t*, float*, float*, std::size_t, \
                                        const Adam8Coef<T>&);                                                   \
  template double sum_abs<Isa::avx2, T>(const T*, std::size_t);                                                 \
  template double max_abs<Isa::avx2, T>(const T*, std::size_t);                                                 \
  template double sum_abs_pow<Isa::avx2, T>(const T*, std::size_t, double);                                     \
  template void scale<Isa::avx2, T>(T*, std::size_t, T);                                                        \
  template void clamp_abs<Isa::avx2, T>(T*, std::size_t, T);                                                    \
  template void accumulate<Isa::avx2, T>(T*, const T*, std::size_t, T);                                         \
  template void sq_rows_cols<Isa::avx2, T>(const T*, std::size_t, std::size_t, std::size_t, double*, double*);  \
  template double adafactor_factored_norm<Isa::avx2, T>(const T*, const T*, const T*, std::size_t, std::size_t, \
                                                        std::size_t, T, T, bool);                               \
  template void adafactor_factored_apply<Isa::avx2, T>(T*, const T*, const T*, const T*, std::size_t,           \
                                                       std::size_t, std::size_t, T, T, bool, T, T);             \
  template double adafactor_vector_var<Isa::avx2, T>(const T*, T*, std::size_t, T, T, bool);                    \
  template void adafactor_vector_apply<Isa::avx2, T>(T*, const T*, const T*, std::size_t, T, bool, T, T);
SLIMGRAD_EXTRA_INST(float)
SLIMGRAD_EXTRA_INST(double)
#undef SLIMGRAD_EXTRA_INST
template void quantize_signed<Isa::avx2>(const float*, std::int8_t*, float*, std::size_t);
template void quantize_unsigned<Isa::avx2>(const float*, std::uint8_t*, float*, std::size_t);
template void dequantize_signed<Isa::avx2>(const std::int8_t*, const float*, float*, std::size_t);
template void dequantize_unsigned<Isa::avx2>(const std::uint8_t*, const float*, float*, std::size_t);
}  // namespace slimgrad::kernels
