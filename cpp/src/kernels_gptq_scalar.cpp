// Scalar reference (the oracle) of the GPTQ / SparseGPT block update
// (gptq.hpp): one std::fma chain per element, k in order. The SIMD units
// compute the same chains (vfmadd per lane), so they match bit for bit.
#include <cmath>

#include "slimgrad/gptq.hpp"

namespace slimgrad::kernels {

template <>
void gemm_acc<Isa::scalar>(double* c, std::size_t ldc, const double* a, std::size_t lda, const double* b,
                           std::size_t ldb, std::size_t rows, std::size_t n, std::size_t kc) {
  for (std::size_t j = 0; j < n; ++j)
    for (std::size_t r = 0; r < rows; ++r) {
      double acc = c[r + j * ldc];
      for (std::size_t k = 0; k < kc; ++k) acc = std::fma(a[r + k * lda], b[k * ldb + j], acc);
      c[r + j * ldc] = acc;
    }
}

}  // namespace slimgrad::kernels
