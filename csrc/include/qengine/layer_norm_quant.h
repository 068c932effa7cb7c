// LayerNorm + per-token activation quantization in one pass (torch-free launcher).
//
//   mean[m] = sum_c x[m,c] / C,  var[m] = sum_c (x[m,c] - mean[m])^2 / C      (fp32, from registers)
//   y[m,c]  = to_x_type((x[m,c] - mean[m]) * rsqrt(var[m] + eps) * weight[c] + bias[c])
//   q, scale = quantize_act(y, smooth)    (qengine/quantize_act.h's contract, bit for bit given y)
//
// y is never written: the LayerNorm in front of a quantized linear (a transformer block's norm1 /
// norm2 / norm3 feeding to_qkv / to_q / the feed-forward's projection) costs one read of x and one
// write of q. y matches torch's LayerNorm up to the rounding of mean and rstd (summation order,
// rsqrt), so an element of y may differ from torch's by one unit in the last place of x_type.
// Limits: 16-bit x, C a multiple of 16 and at most 4096 (a row lives in one warp's registers).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "qengine/types.h"

namespace qengine {

constexpr int64_t kLayerNormQuantMaxC = 4096;

struct LayerNormQuantParams {
  const void* x;          // [M, C] x_type (bf16 / fp16), contiguous, 16-byte aligned
  FloatType x_type;
  const void* weight;     // [C] x_type, or nullptr (no affine scale)
  const void* bias;       // [C] x_type, or nullptr
  float eps;
  const void* smooth;     // [C] smooth_type (x_type or fp32), or nullptr
  FloatType smooth_type;
  void* q;                // [M, C] int8 | fp8 e4m3, contiguous
  float* scale;           // [M] fp32
  int64_t M;
  int64_t C;
  QuantType q_type;
};

// Returns cudaErrorInvalidValue for unsupported arguments, else the launch's error.
cudaError_t layer_norm_quant(const LayerNormQuantParams& p, cudaStream_t stream);

}  // namespace qengine
