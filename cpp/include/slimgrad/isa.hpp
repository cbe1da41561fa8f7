// Instruction-set levels and the runtime choice between them.
//
// Every kernel is compiled once per level (kernels_<area>_<isa>.cpp, with the
// level's flags on that file only). At import the best level the CPU and OS
// support is chosen (cpuid + xgetbv); SLIMGRAD_ISA or set_active_isa() can
// force a lower one, e.g. to test the scalar oracle on a machine with AVX2.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

namespace slimgrad {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

template <Isa I>
using IsaTag = std::integral_constant<Isa, I>;

const char* isa_name(Isa isa);
std::optional<Isa> parse_isa(std::string_view name);

// Compiled into this binary (avx2/avx512 only on x86-64 builds).
bool isa_built(Isa isa);
// Built, and the CPU and OS can run it (OS support = xgetbv says the wide
// registers are saved on context switch).
bool isa_supported(Isa isa);
Isa best_isa();

Isa active_isa();
// Throws std::invalid_argument naming the level and what this machine supports.
void set_active_isa(Isa isa);
// Reads SLIMGRAD_ISA (if set) and activates it; throws like set_active_isa.
void init_isa_from_env();

// Calls fn(IsaTag<I>{}) for the active level I. Kernels are templates on Isa
// with one explicit instantiation per ISA file, so a level that is declared
// but not implemented for some kernel fails at link time, not at run time.
template <class Fn>
decltype(auto) dispatch(Fn&& fn) {
  switch (active_isa()) {
#if SLIMGRAD_HAVE_AVX512
    case Isa::avx512:
      return fn(IsaTag<Isa::avx512>{});
#endif
#if SLIMGRAD_HAVE_AVX2
    case Isa::avx2:
      return fn(IsaTag<Isa::avx2>{});
#endif
    default:
      return fn(IsaTag<Isa::scalar>{});
  }
}

}  // namespace slimgrad
