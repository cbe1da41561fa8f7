// AMX helpers shared by the int8 tile kernels (kernels_qgemm_simd.hpp:
// W8A8 / W4A8; kernels_quant_matmul_simd.hpp: int8 x int8 -> int32), for
// the avx512 unit only (level amx of isa.hpp; Linux's grant of the tile
// state is asked for once, at detection).
//
// Every kernel uses one configuration: 8 tiles of 16 rows x 64 bytes
// (tiles 0-3 int32 sums of 16 x 16, tiles 4-7 int8 operands of 16 rows x
// 64 k or 64 k x 16 columns in the 4-byte interleaved layout tdpbssd takes
// as its second operand). A tile's int32 adds wrap like vpdpbusd's: sums
// that end inside int32 are exact.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#if defined(__AVX512F__)
namespace slimgrad::kernels {
namespace {

constexpr std::size_t kAmxK = 64;  // k per tile product (64 bytes per row)

struct alignas(64) TileConfig {
  std::uint8_t palette = 1, start_row = 0, reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

__attribute__((target("amx-tile,amx-int8"))) inline void amx_configure() {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  asm volatile("" ::: "memory");  // ldtilecfg's asm names only the first 8 bytes of cfg as its input
  _tile_loadconfig(&cfg);
}

// GCC's tileloadd asm does not name the memory it reads: a compiler barrier
// after filling a buffer that tiles load keeps the stores before the loads.
inline void amx_fence() { asm volatile("" ::: "memory"); }

}  // namespace
}  // namespace slimgrad::kernels
#endif
