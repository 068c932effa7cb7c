// Activation pre-pass of the quantized conv (every arch): per-tensor absmax, quantization with
// one scale, and the explicit im2col of the mma.sync fallback. See qengine/conv2d.h.
//
// Why a separate pass and not a quantizing mainloop: the sm90 conv loads its A operand with
// TMA im2col straight into shared memory in the 8-bit type wgmma reads, so 16-bit data cannot
// be converted on the way in without giving up TMA (and each input pixel is read kh*kw times by
// the implicit GEMM, so converting there would also repeat the work 9x for a 3x3 conv).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "qengine/conv2d.h"
#include "static_quant.cuh"

namespace qengine {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxAbsmaxBlocks = 2048;

template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&v)[8]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = static_cast<float>(e[i]);
}

// Element offset of the i-th 8-element vector of a [rows, cols] view with row stride ld.
__device__ __forceinline__ int64_t vec_offset(int64_t i, int64_t vecs_per_row, int64_t ld) {
  const int64_t r = i / vecs_per_row;
  return r * ld + (i - r * vecs_per_row) * 8;
}

template <typename T>
__global__ void absmax_kernel(const T* __restrict__ x, int64_t nvec, int64_t vecs_per_row, int64_t ld,
                              unsigned int* __restrict__ absmax_bits) {
  float m = 0.f;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < nvec; i += int64_t(gridDim.x) * blockDim.x) {
    float v[8];
    load8(x + vec_offset(i, vecs_per_row, ld), v);
#pragma unroll
    for (int k = 0; k < 8; ++k) m = fmaxf(m, fabsf(v[k]));
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  __shared__ float warp_max[kThreads / 32];
  if ((threadIdx.x & 31) == 0) warp_max[threadIdx.x >> 5] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < kThreads / 32; ++w) m = fmaxf(m, warp_max[w]);
    // Non-negative floats order like their bit patterns, so an integer max is a float max.
    atomicMax(absmax_bits, __float_as_uint(m));
  }
}

using static_quant::Quotient;
template <QuantType Q>
using QuantTraits = static_quant::Traits<Q>;

template <typename T, QuantType Q>
__global__ void quantize_kernel(const T* __restrict__ x, int64_t nvec, int64_t vecs_per_row, int64_t ld,
                                const float* __restrict__ static_scale,
                                const unsigned int* __restrict__ absmax_bits, uint8_t* __restrict__ q,
                                float* __restrict__ scale_out) {
  float scale;
  if (static_scale != nullptr) {
    scale = *static_scale;
  } else {
    const float amax = __uint_as_float(*absmax_bits);
    scale = amax > 0.f ? __fdiv_rn(amax, QuantTraits<Q>::kQmax) : 1.f;
  }
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i == 0 && scale_out != nullptr) *scale_out = scale;
  if (i >= nvec) return;
  const Quotient div = Quotient::of(scale);
  float v[8];
  load8(x + vec_offset(i, vecs_per_row, ld), v);
  uint8_t out[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) out[k] = QuantTraits<Q>::cvt(div(v[k]));
  *reinterpret_cast<uint2*>(q + i * 8) = *reinterpret_cast<const uint2*>(out);
}

// One thread per 16-byte chunk of a cols row: (m, r, s, c16).
__global__ void im2col_kernel(const uint8_t* __restrict__ xq, int H, int W, int C, int kh, int kw, int sh, int sw,
                              int ph, int pw, int dh, int dw, int Ho, int Wo, int64_t total, uint8_t* __restrict__ cols) {
  const int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int c16 = C / 16;
  const int64_t per_row = int64_t(kh) * kw * c16;
  const int64_t m = i / per_row;
  int rem = static_cast<int>(i - m * per_row);
  const int c = rem % c16;
  rem /= c16;
  const int s = rem % kw, r = rem / kw;
  const int q = static_cast<int>(m % Wo);
  const int64_t bp = m / Wo;
  const int p = static_cast<int>(bp % Ho);
  const int64_t b = bp / Ho;
  const int h = p * sh - ph + r * dh, w = q * sw - pw + s * dw;
  uint4 v = make_uint4(0, 0, 0, 0);
  if (h >= 0 && h < H && w >= 0 && w < W)
    v = *reinterpret_cast<const uint4*>(xq + (((b * H + h) * W + w) * int64_t(C) + c * 16));
  *reinterpret_cast<uint4*>(cols + i * 16) = v;
}

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

}  // namespace

namespace {
bool bad_view(const void* x, int64_t rows, int64_t cols, int64_t ld) {
  return rows <= 0 || cols <= 0 || cols % 8 != 0 || ld < cols || ld % 8 != 0 || reinterpret_cast<uintptr_t>(x) % 16 != 0;
}
}  // namespace

cudaError_t conv_absmax(const void* x, int64_t rows, int64_t cols, int64_t ld, FloatType x_type,
                        unsigned int* absmax_bits, cudaStream_t stream) {
  if (bad_view(x, rows, cols, ld)) return cudaErrorInvalidValue;
  cudaError_t e = cudaMemsetAsync(absmax_bits, 0, sizeof(unsigned int), stream);
  if (e != cudaSuccess) return e;
  const int64_t nvec = rows * (cols / 8);
  const int grid = static_cast<int>(std::min<int64_t>(blocks_for(nvec), kMaxAbsmaxBlocks));
  if (x_type == FloatType::kBF16)
    absmax_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(x), nvec, cols / 8, ld, absmax_bits);
  else if (x_type == FloatType::kFP16)
    absmax_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const __half*>(x), nvec, cols / 8, ld, absmax_bits);
  else
    return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t conv_quantize(const void* x, int64_t rows, int64_t cols, int64_t ld, FloatType x_type, QuantType q_type,
                          const float* static_scale, const unsigned int* absmax_bits, void* q, float* scale_out,
                          cudaStream_t stream) {
  if (bad_view(x, rows, cols, ld) || reinterpret_cast<uintptr_t>(q) % 8 != 0) return cudaErrorInvalidValue;
  if (static_scale == nullptr && absmax_bits == nullptr) return cudaErrorInvalidValue;
  const int64_t nvec = rows * (cols / 8);
  auto* qo = static_cast<uint8_t*>(q);
#define QENGINE_LAUNCH(T, QT) \
  quantize_kernel<T, QT><<<blocks_for(nvec), kThreads, 0, stream>>>(static_cast<const T*>(x), nvec, cols / 8, ld, static_scale, absmax_bits, qo, scale_out)
  const bool int8 = q_type == QuantType::kInt8;
  if (x_type == FloatType::kBF16) {
    if (int8) QENGINE_LAUNCH(__nv_bfloat16, QuantType::kInt8); else QENGINE_LAUNCH(__nv_bfloat16, QuantType::kFP8E4M3);
  } else if (x_type == FloatType::kFP16) {
    if (int8) QENGINE_LAUNCH(__half, QuantType::kInt8); else QENGINE_LAUNCH(__half, QuantType::kFP8E4M3);
  } else {
    return cudaErrorInvalidValue;
  }
#undef QENGINE_LAUNCH
  return cudaGetLastError();
}

cudaError_t conv_im2col(const void* xq, int B, int H, int W, int C, int kh, int kw, int stride_h, int stride_w,
                        int pad_h, int pad_w, int dil_h, int dil_w, int Ho, int Wo, void* cols, cudaStream_t stream) {
  if (C % 16 != 0 || reinterpret_cast<uintptr_t>(xq) % 16 != 0 || reinterpret_cast<uintptr_t>(cols) % 16 != 0)
    return cudaErrorInvalidValue;
  const int64_t total = int64_t(B) * Ho * Wo * kh * kw * (C / 16);
  if (total == 0) return cudaSuccess;
  im2col_kernel<<<blocks_for(total), kThreads, 0, stream>>>(static_cast<const uint8_t*>(xq), H, W, C, kh, kw, stride_h,
                                                            stride_w, pad_h, pad_w, dil_h, dil_w, Ho, Wo, total,
                                                            static_cast<uint8_t*>(cols));
  return cudaGetLastError();
}

}  // namespace qengine
