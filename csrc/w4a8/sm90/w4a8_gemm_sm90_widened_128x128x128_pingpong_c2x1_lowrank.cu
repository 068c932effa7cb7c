// W4A8 GEMM, sm_90a, weights widened to INT8 in the workspace, tile 128x128x128 ping-pong, clusters of 2 row tiles, low-rank product
// added in the epilogue (bf16 and fp16 outputs).
#include "w4a8_gemm_sm90.cuh"

namespace qengine::w4a8::sm90 {
QENGINE_W4A8_SM90_DEFINE(w4a8_sm90_widened_128x128x128_pingpong_c2x1_lowrank, W4A8TileConfig::kSm90_Widened_128x128x128_Pingpong_C2x1, LowRank::kSource)
}  // namespace qengine::w4a8::sm90
