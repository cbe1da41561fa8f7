// Runtime ISA detection: cpuid for the instructions, xgetbv for OS support of
// the YMM/ZMM state. Detection runs once; the active level is an atomic so a
// kernel running on another thread never sees a torn value.
#include "slimgrad/isa.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#define SLIMGRAD_X86_HOST 1
#endif

namespace slimgrad {
namespace {

#ifdef SLIMGRAD_X86_HOST
unsigned long long read_xcr0() {
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

// Linux keeps AMX's 8 KiB of tile data out of a process's saved state until
// the process asks for it (arch_prctl ARCH_REQ_XCOMP_PERM, feature 18 =
// XTILEDATA, Linux 5.16+); a tile instruction before that is SIGILL. The
// grant is per process and covers every thread.
bool request_tile_state() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  constexpr long kReqXcompPerm = 0x1023, kXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXtiledata) == 0;
#else
  return false;
#endif
}

Isa detect() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return Isa::scalar;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12), f16c = c & (1u << 29);
  if (!osxsave) return Isa::scalar;
  const unsigned long long xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;            // SSE + AVX state
  const bool zmm_state = (xcr0 & 0xE6) == 0xE6;          // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return Isa::scalar;
  const bool avx2 = b & (1u << 5), bmi1 = b & (1u << 3), bmi2 = b & (1u << 8);
  const bool avx512f = b & (1u << 16), avx512dq = b & (1u << 17), avx512bw = b & (1u << 30),
             avx512vl = b & (1u << 31), avx512cd = b & (1u << 28);
  // x86-64-v3 = AVX2 + FMA + F16C + BMI1/2 (+ MOVBE, LZCNT, which come with them).
  const bool v3 = ymm_state && avx2 && fma && f16c && bmi1 && bmi2;
  // x86-64-v4 = v3 + AVX-512 F/BW/CD/DQ/VL.
  const bool v4 = v3 && zmm_state && avx512f && avx512dq && avx512bw && avx512vl && avx512cd;
  const bool vnni = c & (1u << 11);  // leaf 7 ECX: AVX512_VNNI
  unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
  const bool bf16 = __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & (1u << 5));  // leaf 7.1 EAX: AVX512_BF16
  // leaf 7 EDX: AMX-BF16 (22), AMX-TILE (24), AMX-INT8 (25); XCR0 bits 17-18:
  // the OS saves TILECFG and TILEDATA
  const bool amx = (d & (1u << 22)) && (d & (1u << 24)) && (d & (1u << 25)) && (xcr0 & 0x60000) == 0x60000;
  if (v4 && vnni && bf16 && amx && request_tile_state()) return Isa::amx;
  if (v4 && vnni && bf16) return Isa::avx512_bf16;
  return v4 && vnni ? Isa::avx512_vnni : v4 ? Isa::avx512 : v3 ? Isa::avx2 : Isa::scalar;
}
#else
Isa detect() { return Isa::scalar; }
#endif

Isa detected_best() {
  static const Isa best = detect();
  return best;
}

std::atomic<int>& active_slot() {
  static std::atomic<int> slot{static_cast<int>(best_isa())};
  return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::avx512_vnni: return "avx512_vnni";
    case Isa::avx512_bf16: return "avx512_bf16";
    case Isa::amx: return "amx";
  }
  return "unknown";
}

std::optional<Isa> parse_isa(std::string_view name) {
  for (Isa isa : kIsaLevels)
    if (name == isa_name(isa)) return isa;
  return std::nullopt;
}

std::string isa_names(std::string_view quote) {
  std::string out;
  for (Isa isa : kIsaLevels) {
    if (!out.empty()) out += ", ";
    out.append(quote).append(isa_name(isa)).append(quote);
  }
  return out;
}

bool isa_built(Isa isa) {
  switch (isa) {
    case Isa::scalar: return true;
#if SLIMGRAD_HAVE_AVX2
    case Isa::avx2: return true;
#endif
#if SLIMGRAD_HAVE_AVX512
    case Isa::avx512:
    case Isa::avx512_vnni:
    case Isa::avx512_bf16:
    case Isa::amx: return true;
#endif
    default: return false;
  }
}

bool isa_supported(Isa isa) {
  return isa_built(isa) && static_cast<int>(isa) <= static_cast<int>(detected_best());
}

Isa best_isa() {
  Isa best = Isa::scalar;
  for (Isa isa : kIsaLevels)
    if (isa_supported(isa)) best = isa;
  return best;
}

Isa active_isa() { return static_cast<Isa>(active_slot().load(std::memory_order_relaxed)); }

void set_active_isa(Isa isa) {
  if (!isa_supported(isa)) {
    std::string have;
    for (Isa i : kIsaLevels)
      if (isa_supported(i)) have += std::string(have.empty() ? "" : ", ") + isa_name(i);
    throw std::invalid_argument(std::string("ISA '") + isa_name(isa) + "' is not " +
                                (isa_built(isa) ? "supported by this CPU" : "built into this binary") +
                                "; available: " + have);
  }
  active_slot().store(static_cast<int>(isa), std::memory_order_relaxed);
}

void init_isa_from_env() {
  const char* env = std::getenv("SLIMGRAD_ISA");
  if (env == nullptr || *env == '\0') return;
  const auto isa = parse_isa(env);
  if (!isa)
    throw std::invalid_argument("SLIMGRAD_ISA: expected one of " + isa_names() + ", got '" + env + "'");
  set_active_isa(*isa);
}

}  // namespace slimgrad
