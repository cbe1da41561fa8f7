// Core elementwise kernels shared by the optimizers and utilities:
// an in-place axpy, a fixed-order squared norm, a finite check and the
// exact float16 / bfloat16 -> float32 widening.
//
// Two layers, the pattern every area follows:
//  - slimgrad::kernels::<fn><Isa, T>: single-threaded kernels on one
//    contiguous range, one explicit instantiation per ISA file;
//  - slimgrad::<fn>: the entry points: split the range into fixed chunks,
//    run them on the thread pool and dispatch to the active ISA.
#pragma once

#include <cstddef>
#include <cstdint>

#include "slimgrad/isa.hpp"

namespace slimgrad {

namespace kernels {
// y[i] += alpha * x[i]
template <Isa I, class T>
void axpy(T* y, const T* x, T alpha, std::size_t n);
// sum of x[i]^2, accumulated in T lanes, returned as double
template <Isa I, class T>
double sum_squares(const T* x, std::size_t n);
// index of the first NaN or +-inf in x[0, n), or n if all are finite
template <Isa I, class T>
std::size_t find_nonfinite(const T* x, std::size_t n);
// Streaming-bandwidth probe: the memory traffic of an Adam step (reads p, g,
// m, v; writes p, m, v) with trivial arithmetic, so it runs at the speed of
// memory. Optimizer benchmarks report their step as a fraction of it.
template <Isa I>
void stream_probe(float* p, const float* g, float* m, float* v, std::size_t n);
// y[i] = x[i] widened exactly to float32 from bfloat16 (bf16) or IEEE
// float16: simd::load_bf16 / load_f16, the tail by the scalar conversions.
template <Isa I>
void widen_half(const std::uint16_t* x, float* y, std::size_t n, bool bf16);
// y[i] = x[i] rounded to nearest even to bfloat16 (bf16) or IEEE float16
// (NaN stays NaN, quieted): simd::store_bf16 / store_f16, the tail by the
// scalar conversions.
template <Isa I>
void narrow_half(const float* x, std::uint16_t* y, std::size_t n, bool bf16);
}  // namespace kernels

template <class T>
void axpy(T* y, const T* x, T alpha, std::size_t n);
// Chunks of kSumBlock elements are reduced independently and their partials
// added in order: the result does not depend on the thread count.
inline constexpr std::size_t kSumBlock = 4096;
template <class T>
double squared_norm(const T* x, std::size_t n);
// -1 if every element is finite.
template <class T>
std::ptrdiff_t find_nonfinite(const T* x, std::size_t n);
void stream_probe(float* p, const float* g, float* m, float* v, std::size_t n);
// float16 / bfloat16 -> float32, threaded: what the selections and other
// float32-only kernels read in place of a half-precision array. NumPy's
// astype took 10 ms (bfloat16, ml_dtypes) and 25 ms (float16) for 16M
// values here, 4-10x the magnitude selection that followed.
void widen_half(const std::uint16_t* x, float* y, std::size_t n, bool bf16);
// float32 -> float16 / bfloat16, threaded: a GGUF export's F16 / BF16
// tensors. NumPy's astype took 6-15 ms per 16M values.
void narrow_half(const float* x, std::uint16_t* y, std::size_t n, bool bf16);

}  // namespace slimgrad
