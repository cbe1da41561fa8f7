// Threaded, dispatched, multi-tensor entry points of Prodigy's two passes
// (see muon_prodigy.hpp). The d estimate needs two sums over every
// parameter before any parameter moves: pass 1 keeps one (num, den) partial
// per planner piece, and they are added per array in piece order, so any
// thread count gives the same bits. The scalar logic between the passes (d,
// d_max, growth) is in slimgrad.optim._prodigy, where prodigyopt has it.
#include <vector>

#include "slimgrad/muon_prodigy.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad {

template <class T>
void prodigy_accumulate_step(const T* const* p, const T* const* g, T* const* m, T* const* v, T* const* s,
                             const T* const* p0, const std::size_t* sizes, std::size_t count,
                             const ProdigyCoef<T>* coef, double* sums) {
  // Pieces start at multiples of kGrain; with slice_p > 1 a piece's sliced
  // elements are those i in it with i % slice_p == 0 (s, p0 indexed i / slice_p),
  // so pieces never share an element of s.
  const WorkPlan plan = plan_work(sizes, count);
  std::vector<double> partial(2 * plan.pieces.size(), 0.0);
  dispatch([&](auto isa) {
    run_plan(plan, [&](std::size_t k, const Piece& it) {
      const std::size_t a = it.array;
      // The SIMD kernels handle slice_p == 1 only (kernels_prodigy_simd.hpp).
      auto* kernel = coef[a].slice_p == 1 ? &kernels::prodigy_accumulate<decltype(isa)::value, T>
                                          : &kernels::prodigy_accumulate<Isa::scalar, T>;
      kernel(p[a], g[a], m[a], v[a], s[a], p0[a], it.begin, it.end, coef[a], &partial[2 * k]);
    });
  });
  for (std::size_t a = 0; a < 2 * count; ++a) sums[a] = 0.0;
  for (std::size_t k = 0; k < plan.pieces.size(); ++k) {
    sums[2 * plan.pieces[k].array] += partial[2 * k];
    sums[2 * plan.pieces[k].array + 1] += partial[2 * k + 1];
  }
}

template <class T>
void prodigy_apply_step(T* const* p, const T* const* g, const T* const* m, const T* const* v,
                        const std::size_t* sizes, std::size_t count, const ProdigyCoef<T>* coef) {
  const WorkPlan plan = plan_work(sizes, count);
  dispatch([&](auto isa) {
    run_plan(plan, [&](std::size_t, const Piece& it) {
      const std::size_t o = it.begin, a = it.array;
      kernels::prodigy_apply<decltype(isa)::value, T>(p[a] + o, g[a] + o, m[a] ? m[a] + o : nullptr, v[a] + o,
                                                      it.end - o, coef[a]);
    });
  });
}

#define SLIMGRAD_PRODIGY_ENTRY(T)                                                                              \
  template void prodigy_accumulate_step<T>(const T* const*, const T* const*, T* const*, T* const*, T* const*,  \
                                           const T* const*, const std::size_t*, std::size_t,                   \
                                           const ProdigyCoef<T>*, double*);                                    \
  template void prodigy_apply_step<T>(T* const*, const T* const*, const T* const*, const T* const*,            \
                                      const std::size_t*, std::size_t, const ProdigyCoef<T>*);
SLIMGRAD_PRODIGY_ENTRY(float)
SLIMGRAD_PRODIGY_ENTRY(double)
#undef SLIMGRAD_PRODIGY_ENTRY

}  // namespace slimgrad
