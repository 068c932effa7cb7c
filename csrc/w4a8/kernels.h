// Entry points of the per-config W4A8 translation units (internal to csrc/w4a8/). They exist
// only when sm_90a is a target (QENGINE_HAS_SM90; see setup.py's directory rule).
#pragma once

#include <cstddef>
#include <cuda_runtime.h>

#include "qengine/w4a8_gemm.h"

#define QENGINE_DECLARE_W4A8_GEMM(NAME)                                   \
  cudaError_t NAME##_run(const W4A8GemmParams& p, cudaStream_t stream); \
  size_t NAME##_workspace(const W4A8GemmParams& p);

namespace qengine::w4a8::sm90 {
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x128x128_coop)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x128x128_coop_lowrank)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x128x128_coop_lowrank_staged)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_64x128x128_pingpong)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_64x128x128_pingpong_lowrank)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_64x64x128_pingpong)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_64x64x128_pingpong_lowrank)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x64x128_coop_streamk)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x64x128_coop_streamk_lowrank)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x32x128_coop_streamk)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x32x128_coop_streamk_lowrank)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x256x128_coop)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x256x128_coop_lowrank)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x256x128_coop_lowrank_staged)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x256x128_coop_c2x1)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x256x128_coop_c2x1_lowrank)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x256x128_coop_c2x1_lowrank_staged)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x224x128_coop_c2x1)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x224x128_coop_c2x1_lowrank)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_128x224x128_coop_c2x1_lowrank_staged)
// mma.sync split-K (w4a8_gemm_splitk_mma.cu): one entry each; they read either low-rank form.
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_mma_128x64x128_splitk)
QENGINE_DECLARE_W4A8_GEMM(w4a8_sm90_mma_128x64x256_splitk)
}  // namespace qengine::w4a8::sm90

#undef QENGINE_DECLARE_W4A8_GEMM
