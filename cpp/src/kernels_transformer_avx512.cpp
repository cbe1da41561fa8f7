// Transformer kernels for avx512: the templates of kernels_transformer_simd.hpp
// (LayerNorm, masked softmax, Hessian tile), instantiated for this ISA.
#include "kernels_transformer_simd.hpp"

SLIMGRAD_TRANSFORMER_INSTANTIATE(slimgrad::Isa::avx512)
