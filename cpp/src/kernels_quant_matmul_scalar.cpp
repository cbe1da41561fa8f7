// Scalar reference of the quantized products: plain loops.
//  - qmatmul_rows: each weight dequantized exactly as quant::dequantize does
//    (scale * (q - zp), float32), then a float32 dot product in index order;
//  - matmul_s8_cols: int32 dot products (exact; the SIMD files must agree
//    bit for bit).
#include "slimgrad/quant.hpp"

namespace slimgrad::kernels {
namespace {

int code_at(const QMatmulArgs& a, std::size_t r, std::size_t j) {
  const std::uint8_t* row = a.w + r * a.row_bytes;
  if (a.bits == 8) return a.is_signed ? static_cast<std::int8_t>(row[j]) : row[j];
  int c = (row[j / 2] >> (4 * (j % 2))) & 0x0F;
  if (a.is_signed && c >= 8) c -= 16;
  return c;
}

}  // namespace

template <>
void qmatmul_rows<Isa::scalar>(const QMatmulArgs& a, std::size_t r0, std::size_t r1, float* scratch) {
  (void)scratch;
  for (std::size_t r = r0; r < r1; ++r) {
    for (std::size_t b = 0; b < a.batch; ++b) {
      const float* x = a.x + b * a.in;
      float acc = 0.0f;
      for (std::size_t j = 0; j < a.in; ++j) {
        const std::size_t p = r * a.param_stride + j / a.group_size;
        const float w = a.scale[p] * (static_cast<float>(code_at(a, r, j)) - static_cast<float>(a.zp[p]));
        acc += x[j] * w;
      }
      a.y[b * a.out + r] = acc;
    }
  }
}

template <>
void matmul_s8_cols<Isa::scalar>(const std::int8_t* a, std::size_t M, const std::int8_t* b, std::size_t K,
                                 std::size_t n0, std::size_t n1, const std::int32_t* bsum, std::int32_t* c,
                                 std::size_t N, std::int16_t* scratch, const std::int8_t* a_tiles) {
  (void)bsum;
  (void)scratch;
  (void)a_tiles;  // AMX is never the scalar level
  for (std::size_t m = 0; m < M; ++m)
    for (std::size_t n = n0; n < n1; ++n) {
      std::int32_t s = 0;
      for (std::size_t k = 0; k < K; ++k) s += static_cast<std::int32_t>(a[m * K + k]) * b[n * K + k];
      c[m * N + n] = s;
    }
}

}  // namespace slimgrad::kernels
