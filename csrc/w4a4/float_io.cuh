// Reading and writing the 16/32-bit float tensors of the W4A4 kernels whose dtype is a runtime
// argument (bias, smoothing, lora factors, outputs). One switch per access instead of a template
// per dtype combination: these accesses are a small part of either kernel's work.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "qengine/types.h"

namespace qengine::w4a4 {

__device__ __forceinline__ float load_as_float(const void* p, FloatType t, int64_t i) {
  switch (t) {
    case FloatType::kBF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case FloatType::kFP16: return __half2float(static_cast<const __half*>(p)[i]);
    default: return static_cast<const float*>(p)[i];
  }
}

// Round-to-nearest-even conversions, like torch's .to(dtype) of the reference's fp32 result.
__device__ __forceinline__ void store_float(void* p, FloatType t, int64_t i, float v) {
  switch (t) {
    case FloatType::kBF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v); break;
    case FloatType::kFP16: static_cast<__half*>(p)[i] = __float2half_rn(v); break;
    default: static_cast<float*>(p)[i] = v; break;
  }
}

}  // namespace qengine::w4a4
