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

// One k step of a block of up to 2 x 2 tile products: first-operand tiles
// 4 and 5 (I of them: 16 rows x 64 bytes from f0, f1 with stride ldf),
// second-operand tiles 6 and 7 (J of them, from s0, s1, stride lds); sum
// tile 2 i + j += tile 4 + i times tile 6 + j. Signed: tdpbssd, else
// tdpbsud (unsigned second operand).
template <int I, int J, bool Signed = true>
__attribute__((target("amx-tile,amx-int8"), always_inline)) inline void amx_step(const void* f0, const void* f1,
                                                                                 long ldf, const void* s0,
                                                                                 const void* s1, long lds) {
  _tile_loadd(4, f0, ldf);
  if constexpr (I == 2) _tile_loadd(5, f1, ldf);
  _tile_loadd(6, s0, lds);
  if constexpr (J == 2) _tile_loadd(7, s1, lds);
  if constexpr (Signed) {
    _tile_dpbssd(0, 4, 6);
    if constexpr (J == 2) _tile_dpbssd(1, 4, 7);
    if constexpr (I == 2) _tile_dpbssd(2, 5, 6);
    if constexpr (I == 2 && J == 2) _tile_dpbssd(3, 5, 7);
  } else {
    _tile_dpbsud(0, 4, 6);
    if constexpr (J == 2) _tile_dpbsud(1, 4, 7);
    if constexpr (I == 2) _tile_dpbsud(2, 5, 6);
    if constexpr (I == 2 && J == 2) _tile_dpbsud(3, 5, 7);
  }
}

template <int I, int J>
__attribute__((target("amx-tile,amx-int8"), always_inline)) inline void amx_zero_sums() {
  _tile_zero(0);
  if constexpr (J == 2) _tile_zero(1);
  if constexpr (I == 2) _tile_zero(2);
  if constexpr (I == 2 && J == 2) _tile_zero(3);
}

// sums[2 i + j][row][column] = sum tile 2 i + j.
template <int I, int J>
__attribute__((target("amx-tile,amx-int8"), always_inline)) inline void amx_store_sums(std::int32_t (*sums)[16][16]) {
  _tile_stored(0, sums[0], 64);
  if constexpr (J == 2) _tile_stored(1, sums[1], 64);
  if constexpr (I == 2) _tile_stored(2, sums[2], 64);
  if constexpr (I == 2 && J == 2) _tile_stored(3, sums[3], 64);
}

// GCC's tileloadd asm does not name the memory it reads: a compiler barrier
// after filling a buffer that tiles load keeps the stores before the loads.
inline void amx_fence() { asm volatile("" ::: "memory"); }

}  // namespace
}  // namespace slimgrad::kernels
#endif
