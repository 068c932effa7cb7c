// W4A8 GEMM, sm_90a, tile 64x256x128 ping-pong, no low-rank term (bf16 and fp16 outputs).
#include "w4a8_gemm_sm90.cuh"
#include "../kernels.h"

namespace qengine::w4a8::sm90 {
QENGINE_W4A8_SM90_DEFINE(w4a8_sm90_64x256x128_pingpong, W4A8TileConfig::kSm90_64x256x128_Pingpong, LowRank::kNone)
}  // namespace qengine::w4a8::sm90
