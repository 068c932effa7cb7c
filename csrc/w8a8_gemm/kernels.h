// Entry points of the per-config GEMM translation units (internal to csrc/w8a8_gemm/).
// Which of them exist in a build depends on the target archs (see setup.py):
//   QENGINE_HAS_SM90     sm90/*.cu  (sm_90a targeted)
//   QENGINE_HAS_SM80     sm80/int8_*.cu (any target)
//   QENGINE_HAS_SM89_FP8 sm89/*.cu (sm_89 or sm_90a targeted)
#pragma once

#include <cstddef>
#include <cuda_runtime.h>

#include "qengine/w8a8_gemm.h"

#define QENGINE_DECLARE_GEMM(NAME)                                  \
  cudaError_t NAME##_run(const W8A8GemmParams& p, cudaStream_t stream); \
  size_t NAME##_workspace(const W8A8GemmParams& p);

namespace qengine::sm90 {
QENGINE_DECLARE_GEMM(fp8_sm90_64x64x128_pingpong_c1x4)
QENGINE_DECLARE_GEMM(fp8_sm90_128x128x128_pingpong_c2x1)
QENGINE_DECLARE_GEMM(int8_sm90_64x64x128_pingpong_c1x4)
QENGINE_DECLARE_GEMM(int8_sm90_128x128x128_pingpong_c2x1)
QENGINE_DECLARE_GEMM(fp8_sm90_128x128x128_pingpong_c1x2)
QENGINE_DECLARE_GEMM(int8_sm90_128x128x128_pingpong_c1x2)
QENGINE_DECLARE_GEMM(fp8_sm90_64x160x128_pingpong_c1x1)
QENGINE_DECLARE_GEMM(int8_sm90_64x160x128_pingpong_c1x1)
// The same configs with the fused low-rank epilogue (sm90/*_lowrank.cu).
QENGINE_DECLARE_GEMM(fp8_sm90_64x64x128_pingpong_c1x4_lowrank)
QENGINE_DECLARE_GEMM(fp8_sm90_128x128x128_pingpong_c2x1_lowrank)
QENGINE_DECLARE_GEMM(int8_sm90_64x64x128_pingpong_c1x4_lowrank)
QENGINE_DECLARE_GEMM(int8_sm90_128x128x128_pingpong_c2x1_lowrank)
QENGINE_DECLARE_GEMM(fp8_sm90_128x128x128_pingpong_c1x2_lowrank)
QENGINE_DECLARE_GEMM(int8_sm90_128x128x128_pingpong_c1x2_lowrank)
QENGINE_DECLARE_GEMM(fp8_sm90_64x160x128_pingpong_c1x1_lowrank)
QENGINE_DECLARE_GEMM(int8_sm90_64x160x128_pingpong_c1x1_lowrank)
}  // namespace qengine::sm90

namespace qengine::sm80 {
QENGINE_DECLARE_GEMM(int8_sm80_32x64x128)
QENGINE_DECLARE_GEMM(int8_sm80_128x128x64)
QENGINE_DECLARE_GEMM(fp8_sm80_32x64x128)
QENGINE_DECLARE_GEMM(fp8_sm80_128x128x64)
}  // namespace qengine::sm80

#undef QENGINE_DECLARE_GEMM
