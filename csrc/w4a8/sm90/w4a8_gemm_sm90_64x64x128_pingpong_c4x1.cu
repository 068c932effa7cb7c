// W4A8 GEMM, sm_90a, tile 64x64x128 ping-pong in clusters of 4 row tiles, no low-rank term (bf16 and fp16 outputs).
#include "w4a8_gemm_sm90.cuh"
#include "../kernels.h"

namespace qengine::w4a8::sm90 {
QENGINE_W4A8_SM90_DEFINE(w4a8_sm90_64x64x128_pingpong_c4x1, W4A8TileConfig::kSm90_64x64x128_Pingpong_C4x1, LowRank::kNone)
}  // namespace qengine::w4a8::sm90
