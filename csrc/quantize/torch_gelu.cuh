// PyTorch's CUDA GELUs, operation for operation, so that kernels applying them in registers are
// bit-exact with torch's output (quantize_act.cu's gelu-cat and GEGLU rows, gelu_absmax.cu).
// Inline device code only (namespace rowq), like row_quant.cuh.
#pragma once

#include <cuda_runtime.h>

#include "row_quant.cuh"

namespace qengine {
namespace rowq {

// PyTorch's CUDA gelu(approximate="tanh") (GeluCUDAKernelImpl): the same fp32 operations in the
// same order (kBeta is the float nearest sqrt(2) * 2/sqrt(pi) / 2, as torch's constexpr rounds it),
// so that gelu-cat quantization is bit-exact with quantizing torch's gelu output.
__device__ __forceinline__ float gelu_tanh(float x) {
  constexpr float kBeta = static_cast<float>(1.41421356237309504880 * 1.12837916709551257390 * 0.5);
  constexpr float kKappa = 0.044715f;
  const float x_cube = x * x * x;
  const float inner = kBeta * (x + kKappa * x_cube);
  return 0.5f * x * (1.0f + tanhf(inner));
}

// PyTorch's CUDA gelu(approximate="none") (GeluCUDAKernelImpl): x * 0.5 * (1 + erf(x * sqrt(1/2)))
// in fp32, the same operations in the same order, so GEGLU quantization is bit-exact with
// quantizing diffusers' GEGLU output (h * F.gelu(gate), both roundings to x_type included).
__device__ __forceinline__ float gelu_erf(float x) {
  constexpr float kAlpha = static_cast<float>(0.70710678118654752440);
  return x * 0.5f * (1.0f + erff(x * kAlpha));
}

// gelu_tanh of each element of a vector, rounded to T (torch's output).
template <typename T>
__device__ __forceinline__ void gelu_in_place(Vec<T>& g) {
#pragma unroll
  for (int j = 0; j < Vec<T>::kN; ++j) g.v[j] = from_float<T>(gelu_tanh(to_float(g.v[j])));
}

}  // namespace rowq
}  // namespace qengine
