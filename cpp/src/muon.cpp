// Threaded, dispatched, multi-tensor entry points of Muon's elementwise
// passes (see muon_prodigy.hpp). Arrays are cut by the core planner
// (plan_work: pieces depend only on the sizes); the sum of squares keeps one
// partial per piece, added per array in piece order, so every result is
// identical for any thread count.
#include <type_traits>
#include <vector>

#include "slimgrad/muon_prodigy.hpp"
#include "slimgrad/threading.hpp"

namespace slimgrad {
namespace {
// float32 params: the active ISA's kernels; float64: the scalar reference
// (kernels_muon_simd.hpp is float32 only).
template <class T, Isa I>
constexpr Isa muon_isa() {
  return std::is_same_v<T, float> ? I : Isa::scalar;
}
}  // namespace

template <class T>
void muon_momentum_step(const T* const* g, T* const* buf, float* const* work, const std::size_t* sizes,
                        std::size_t count, const MuonMomentum<T>& c, double* sumsq) {
  const WorkPlan plan = plan_work(sizes, count);
  std::vector<double> partial(plan.pieces.size(), 0.0);
  dispatch([&](auto isa) {
    run_plan(plan, [&](std::size_t k, const Piece& it) {
      const std::size_t o = it.begin, a = it.array;
      kernels::muon_momentum<muon_isa<T, decltype(isa)::value>(), T>(g[a] + o, buf[a] + o, work[a] + o, it.end - o, c,
                                                      &partial[k]);
    });
  });
  for (std::size_t a = 0; a < count; ++a) sumsq[a] = 0.0;
  for (std::size_t k = 0; k < plan.pieces.size(); ++k) sumsq[plan.pieces[k].array] += partial[k];
}

void muon_normalize_all(float* const* work, const std::size_t* sizes, std::size_t count, const float* norms,
                        bool round_bf16) {
  const WorkPlan plan = plan_work(sizes, count);
  dispatch([&](auto isa) {
    run_plan(plan, [&](std::size_t, const Piece& it) {
      kernels::muon_normalize<decltype(isa)::value>(work[it.array] + it.begin, it.end - it.begin, norms[it.array],
                                                    round_bf16);
    });
  });
}

void ns_combine_all(float* out, const float* c, std::size_t n, float alpha, float beta, bool round_bf16) {
  const WorkPlan plan = plan_work(&n, 1);
  dispatch([&](auto isa) {
    run_plan(plan, [&](std::size_t, const Piece& it) {
      kernels::ns_combine<decltype(isa)::value>(out + it.begin, c ? c + it.begin : nullptr, it.end - it.begin,
                                                alpha, beta, round_bf16);
    });
  });
}

template <class T>
void muon_apply_step(T* const* p, const float* const* work, const std::size_t* sizes, std::size_t count, T decay,
                     const double* lr) {
  const WorkPlan plan = plan_work(sizes, count);
  dispatch([&](auto isa) {
    run_plan(plan, [&](std::size_t, const Piece& it) {
      const std::size_t o = it.begin, a = it.array;
      kernels::muon_apply<muon_isa<T, decltype(isa)::value>(), T>(p[a] + o, work[a] + o, it.end - o, decay,
                                                   static_cast<T>(lr[a]));
    });
  });
}

template void muon_momentum_step<float>(const float* const*, float* const*, float* const*, const std::size_t*,
                                        std::size_t, const MuonMomentum<float>&, double*);
template void muon_momentum_step<double>(const double* const*, double* const*, float* const*, const std::size_t*,
                                         std::size_t, const MuonMomentum<double>&, double*);
template void muon_apply_step<float>(float* const*, const float* const*, const std::size_t*, std::size_t, float,
                                     const double*);
template void muon_apply_step<double>(double* const*, const float* const*, const std::size_t*, std::size_t, double,
                                      const double*);

}  // namespace slimgrad
