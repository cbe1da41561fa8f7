// The int8-activation GEMM (qgemm.hpp): weight packing (once per weight) and
// the driver: quantize the rows of x (threads over rows), then the
// micro-kernels (threads over blocks of output strips: each output is
// computed by one thread in a fixed order, so any thread count gives the
// same bits). The activation buffer is kept per thread between calls.
#include "slimgrad/qgemm.hpp"

#include <algorithm>
#include <vector>

#include "slimgrad/threading.hpp"

namespace slimgrad::qgemm {

std::size_t packed_kpad(int bits, std::size_t k) {
  const std::size_t step = bits == 8 ? 4 : 8;
  return (k + step - 1) / step * step;
}

std::size_t packed_groups(int bits, std::size_t k, std::size_t group) {
  const std::size_t kpad = packed_kpad(bits, k);
  return kpad == 0 ? 0 : (kpad + group - 1) / group;
}

namespace {

// 5- and 6-bit codes of output c of a strip (codes null: a padding row), as
// u = code + 16 / 32 in blocks of 8 k: the low nibbles as in the 4-bit
// layout, then per high bit (bit 4, bit 5) two 64-bit masks, bit i of the
// first (second) = that bit of the value in byte i's low (high) nibble.
void pack_planes(int bits, const std::int8_t* codes, std::size_t k, std::size_t kpad, std::size_t c,
                 std::uint8_t* ws) {
  const std::size_t block = 64 + 16 * static_cast<std::size_t>(bits - 4);
  for (std::size_t j = 0; j < kpad; ++j) {
    const int code = codes && j < k ? codes[j] : 0;
    const unsigned u = static_cast<unsigned>(code + (1 << (bits - 1)));
    std::uint8_t* blk = ws + (j / 8) * block;
    const std::size_t bi = c * 4 + j % 4;
    const bool high = j % 8 >= 4;
    blk[bi] = high ? static_cast<std::uint8_t>((blk[bi] & 0x0F) | ((u & 15) << 4))
                   : static_cast<std::uint8_t>((blk[bi] & 0xF0) | (u & 15));
    for (int b = 0; b < bits - 4; ++b) {
      std::uint8_t& m = blk[64 + 16 * b + (high ? 8 : 0) + bi / 8];
      const std::uint8_t bit = static_cast<std::uint8_t>(1u << (bi % 8));
      m = (u >> (4 + b)) & 1 ? static_cast<std::uint8_t>(m | bit) : static_cast<std::uint8_t>(m & ~bit);
    }
  }
}

}  // namespace

void pack(const Source& src, std::uint8_t* w, float* pscale, float* pshift, std::int8_t* piscale,
          std::int8_t* pishift) {
  const int bits = src.bits;
  const std::size_t n = src.n, k = src.k, group = src.group;
  const std::size_t kpad = packed_kpad(bits, k), groups = packed_groups(bits, k, group);
  // float entries per row: ceil(k / group), or one per super-block
  const std::size_t cols = src.sub > 1 ? groups / src.sub : (k + group - 1) / group;
  const std::size_t fgroups = src.sub > 1 ? cols : groups;  // packed float entries per row and strip
  const std::size_t strips = (n + kStrip - 1) / kStrip, sb = kpad * kStrip * static_cast<std::size_t>(bits) / 8;
  parallel_chunks(strips, 8, [&](std::size_t b, std::size_t e) {
    for (std::size_t s = b; s < e; ++s) {
      std::uint8_t* ws = w + s * sb;
      std::fill(ws, ws + sb, bits == 8 ? 0 : 0x88);  // zero codes (4 bits: stored + 8)
      for (std::size_t c = 0; c < kStrip; ++c) {
        const std::size_t row = s * kStrip + c;
        for (std::size_t g = 0; g < fgroups; ++g) {
          const std::size_t at = (s * fgroups + g) * kStrip + c;
          const bool real = row < n && g < cols;
          pscale[at] = real ? src.scale[row * cols + g] : 0.0f;
          if (src.shift) pshift[at] = real ? src.shift[row * cols + g] : 0.0f;
        }
        if (src.sub > 1)
          for (std::size_t g = 0; g < groups; ++g) {
            const std::size_t at = (s * groups + g) * kStrip + c;
            piscale[at] = row < n ? src.iscale[row * groups + g] : 0;
            if (src.ishift) pishift[at] = row < n ? src.ishift[row * groups + g] : 0;
          }
        if (bits == 5 || bits == 6) {
          pack_planes(bits, row < n ? src.codes + row * k : nullptr, k, kpad, c, ws);
          continue;
        }
        if (row >= n) continue;
        const std::int8_t* cr = src.codes + row * k;
        for (std::size_t j = 0; j < k; ++j) {
          if (bits == 8) {
            ws[(j / 4) * 64 + c * 4 + j % 4] = static_cast<std::uint8_t>(cr[j]);
          } else {
            std::uint8_t& byte = ws[(j / 8) * 64 + c * 4 + j % 4];
            const std::uint8_t u = static_cast<std::uint8_t>(cr[j] + 8);
            byte = (j % 8 < 4) ? static_cast<std::uint8_t>((byte & 0xF0) | u)
                               : static_cast<std::uint8_t>((byte & 0x0F) | (u << 4));
          }
        }
      }
    }
  });
}

namespace {

// qsum[r, g]: exact sum of row r's activation codes over group g (ggml's
// block sums: they carry the shift and zoff terms, and VNNI's offset of the
// unsigned weights). Plain loops: one pass over m x k bytes, small next to
// the product's m x n x k.
void group_sums(const Packed& p, const std::int8_t* q, std::size_t r0, std::size_t r1, std::int32_t* qsum) {
  for (std::size_t r = r0; r < r1; ++r) {
    const std::int8_t* qr = q + r * p.kpad;
    for (std::size_t g = 0; g < p.n_groups; ++g) {
      const std::size_t k0 = g * p.group, k1 = std::min(p.kpad, k0 + p.group);
      std::int32_t sum = 0;
      for (std::size_t k = k0; k < k1; ++k) sum += qr[k];
      qsum[r * p.n_groups + g] = sum;
    }
  }
}

// Whether a product of `macs` multiply-adds (rows x outputs x padded k) is
// worth waking a second thread: about when it takes ~20 us on one. Measured
// back to back, 2 threads against 1, one parallel region per call (Intel
// Xeon VM, PASSIVE workers; docs/quant.md, "Threads at small sizes"):
// - vpmaddubsw (AVX2), ~15 ps per multiply-add: even at ~1.2M (384 x 384
//   at batch 8), 1.25-1.44x at 2.4M;
// - VNNI, ~4 ps: even at ~5M (384 x 384 at batch 32), 1.13-1.32x at 9.4M,
//   0.40x at batch 1 (4.0 against 10.1 us);
// - AMX on 8-bit codes, ~1.6 ps: even at ~70M (1.01-1.10x at 67-75M,
//   0.60-0.67x at 9.4-38M). AMX on 4-bit codes unpacks the nibbles first
//   and threads as VNNI does (1.23x at 9.4M).
bool threaded(Dot dot, int bits, std::size_t macs) {
  const int log2_min = dot == Dot::madd ? 21 : dot == Dot::amx && bits == 8 ? 26 : 23;
  return macs >= std::size_t{1} << log2_min;
}

}  // namespace

void gemm(const float* x, std::size_t m, const Packed& p, const float* bias, float* y) {
  if (m == 0 || p.n == 0) return;
  const bool vnni = isa_active_at_least(Isa::avx512_vnni), amx = isa_active_at_least(Isa::amx);
  // Rows of x in chunks whose int8 codes take about 1 MB (4 to 256 rows):
  // the buffer stays small (kept per thread between calls) and in L2 while
  // every strip of the weight passes over it. Chunking does not change any
  // output's arithmetic.
  const std::size_t rows = std::min<std::size_t>(256, std::max<std::size_t>(4, (std::size_t{1} << 20) / std::max<std::size_t>(p.kpad, 1) / 4 * 4));
  thread_local std::vector<std::int8_t> q;
  thread_local std::vector<float> xs;
  thread_local std::vector<std::int32_t> qs;
  const std::size_t chunk = std::min(rows, m);
  // Activation sums: for shifts and zero points, for VNNI's unsigned
  // operand, for AVX2's widened 4-bit bytes (code + 8; from 3 rows of x,
  // computed at any row count: a pass over m x k bytes) and for AMX's
  // unsigned 4-bit codes; AMX's signed int8 tiles need none (a pass over
  // the codes saved: ~10 % of 1024 x 384 x 384).
  const auto dot_for = [&](std::size_t mc) {
    return amx && amx_pays(p, mc) ? Dot::amx : vnni ? Dot::vnni : Dot::madd;
  };
  const auto needs_sums = [&](Dot dot) {
    return p.needs_qsum() || dot == Dot::vnni || (dot == Dot::amx && p.bits != 8) ||
           (dot == Dot::madd && p.bits != 8);
  };
  const bool sums = needs_sums(dot_for(chunk)) || needs_sums(dot_for(m % chunk ? m % chunk : chunk));
  // AMX tiles read whole 16-row, 64-byte blocks of the codes (qgemm_strips)
  const std::size_t qbytes = (chunk + 15) / 16 * 16 * p.kpad + 64;
  if (q.size() < qbytes) q.resize(qbytes);
  if (xs.size() < chunk) xs.resize(chunk);
  if (sums && qs.size() < chunk * p.n_groups) qs.resize(chunk * p.n_groups);
  std::int8_t* qp = q.data();
  float* xsp = xs.data();
  std::int32_t* qsp = sums ? qs.data() : nullptr;
  dispatch([&](auto isa) {
    constexpr Isa I = decltype(isa)::value;
    for (std::size_t r0 = 0; r0 < m; r0 += chunk) {
      const std::size_t mc = std::min(chunk, m - r0);
      const Dot dot = dot_for(mc);
      const bool chunk_sums = needs_sums(dot);
      const float* xc = x + r0 * p.k;
      float* yc = y + r0 * p.n;
      // Rows of x quantized in chunks of 16, then blocks of 4 strips (64
      // outputs: even blocks keep the 2-strip tiles whole; each thread's
      // panel of weights stays in its L2 across rows of x), both in one
      // parallel region: one wake-up of the team per chunk of rows.
      const std::size_t row_tasks = (mc + 15) / 16, strip_tasks = (p.strips + 3) / 4;
      parallel_phases(
          threaded(dot, p.bits, mc * p.n * p.kpad), row_tasks,
          [&](std::size_t t) {
            const std::size_t b = t * 16, e = std::min(mc, b + 16);
            kernels::qgemm_quantize_rows<I>(xc, p.k, p.kpad, b, e, qp, xsp);
            if (chunk_sums) group_sums(p, qp, b, e, qsp);
          },
          strip_tasks,
          [&](std::size_t t) {
            kernels::qgemm_strips<I>(p, qp, xsp, chunk_sums ? qsp : nullptr, mc, t * 4, std::min(p.strips, t * 4 + 4),
                                     dot, bias, yc);
          },
          [] { return true; });
    }
  });
}

}  // namespace slimgrad::qgemm
