// Muon (torch.optim.Muon) and Prodigy (the prodigyopt package): the
// elementwise passes of two multipass optimizers.
//
// Muon: per 2-D parameter, momentum -> Newton-Schulz orthogonalization ->
// update. The Newton-Schulz iteration is matrix products (NumPy's BLAS, in
// slimgrad.optim._muon); everything elementwise around it is a fused pass
// here: the momentum update with the nesterov blend and the bf16 rounding
// and sum of squares of the NS input (muon_momentum), the normalization
// (muon_normalize), the combination after each product (ns_combine, torch's
// addmm epilogue), and weight decay + update (muon_apply).
//
// Prodigy: Adam with a step size d estimated from global sums over every
// parameter: pass 1 (prodigy_accumulate) updates the moments and the sliced
// statistic s and returns the two sums (numerator, |s| sum) as per-piece
// partials added in piece order; pass 2 (prodigy_apply) applies the update
// with the new d. Both on the core planner (plan_work / run_plan), so any
// thread count gives the same bits.
//
// Two layers as elsewhere: kernels::<fn><Isa, ...> on one contiguous range
// (scalar reference in kernels_{muon,prodigy}_scalar.cpp, SIMD in
// kernels_{muon,prodigy}_simd.hpp), and the multi-tensor entry points in
// muon.cpp / prodigy.cpp. The multiply-adds torch fuses (lerp, add with
// alpha) are std::fma in the reference and fma() in the SIMD code, the
// others are a multiply then an add in both: elementwise results are the
// reference's bits on every ISA. Reductions add in vector lanes within a
// piece (<= kGrain elements), so they may differ from the reference in the
// last bits (policy "bounded").
#pragma once

#include <cstddef>

#include "slimgrad/isa.hpp"

namespace slimgrad {

// Muon's momentum pass: buf = lerp(buf, g, one_minus_mu); u = nesterov ?
// lerp(g, buf, mu) : buf (torch's lerp: w < 0.5 ? a + w*(b-a) : b +
// (w-1)*(b-a), fused); work = u as float32, rounded to bfloat16 if
// round_bf16. one_minus_mu is 1 - mu rounded from double, as torch passes it.
template <class T>
struct MuonMomentum {
  T mu, one_minus_mu;
  bool nesterov, round_bf16;
};

// Prodigy's per-step constants (prodigyopt 1.1 names; see prodigy.cpp).
// Pass 1: g' = g + coupled_decay * p (coupled weight decay, not written back);
// on the sliced elements i = j * slice_p: num += g'_i * (p0_j - p_i),
// s_j = s_j * beta3 + s_scale * g'_i, den += |s_j|;
// m = m * beta1 + m_scale * g' (if has_m); v = v * beta2 + v_scale * g' * g'.
// Pass 2: denom = sqrt(v) + d_eps; p = p + decoupled * p (if != 0);
// p = p + step * (has_m ? m : g') / denom.
template <class T>
struct ProdigyCoef {
  T beta1, beta2, beta3, m_scale, v_scale, s_scale, coupled_decay;
  T d_eps, decoupled, step;
  bool has_m;
  std::size_t slice_p;
};

namespace kernels {
// n elements; sums[0] += sum(work^2).
template <Isa I, class T>
void muon_momentum(const T* g, T* buf, float* work, std::size_t n, const MuonMomentum<T>& c, double* sums);
// work = work / norm, rounded to bfloat16 if round_bf16.
template <Isa I>
void muon_normalize(float* work, std::size_t n, float norm, bool round_bf16);
// out = beta * c + alpha * out (a multiply, a multiply, an add), rounded to
// bfloat16 if round_bf16; c may be null when beta == 0.
template <Isa I>
void ns_combine(float* out, const float* c, std::size_t n, float alpha, float beta, bool round_bf16);
// p = fma(-lr, work, p * decay).
template <Isa I, class T>
void muon_apply(T* p, const float* work, std::size_t n, T decay, T lr);

// Prodigy pass 1 on elements [begin, end) of one array (begin is where the
// slice indexing starts: s, p0 are indexed by i / slice_p). sums[0] += num,
// sums[1] += den over the sliced elements of the range.
template <Isa I, class T>
void prodigy_accumulate(const T* p, const T* g, T* m, T* v, T* s, const T* p0, std::size_t begin, std::size_t end,
                        const ProdigyCoef<T>& c, double* sums);
template <Isa I, class T>
void prodigy_apply(T* p, const T* g, const T* m, const T* v, std::size_t n, const ProdigyCoef<T>& c);
}  // namespace kernels

// ---------------------------------------------------------- entry points
// Multi-tensor; pointers validated by the bindings. sumsq[a] = sum of squares
// of work array a (its pieces added in order).
template <class T>
void muon_momentum_step(const T* const* g, T* const* buf, float* const* work, const std::size_t* sizes,
                        std::size_t count, const MuonMomentum<T>& c, double* sumsq);
void muon_normalize_all(float* const* work, const std::size_t* sizes, std::size_t count, const float* norms,
                        bool round_bf16);
void ns_combine_all(float* out, const float* c, std::size_t n, float alpha, float beta, bool round_bf16);
// lr[a] per array (the shape-adjusted learning rate).
template <class T>
void muon_apply_step(T* const* p, const float* const* work, const std::size_t* sizes, std::size_t count, T decay,
                     const double* lr);

// coef[a] per array (weight decay, eps, slice_p may differ per group).
// m[a] may be null (beta1 == 0). sums: 2 per array (num, den).
template <class T>
void prodigy_accumulate_step(const T* const* p, const T* const* g, T* const* m, T* const* v, T* const* s,
                             const T* const* p0, const std::size_t* sizes, std::size_t count,
                             const ProdigyCoef<T>* coef, double* sums);
template <class T>
void prodigy_apply_step(T* const* p, const T* const* g, const T* const* m, const T* const* v,
                        const std::size_t* sizes, std::size_t count, const ProdigyCoef<T>* coef);

}  // namespace slimgrad
