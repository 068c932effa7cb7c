// W4A8 GEMM, sm_90a, weights widened to INT8 in the workspace, tile 128x128x128 ping-pong, low-rank branch
// (rank <= 32) multiplied in the epilogue from operands staged in shared memory, a buffer per warp group
// (lowrank_staged_epilogue.cuh; bf16 and fp16 outputs).
#include "w4a8_gemm_sm90.cuh"

namespace qengine::w4a8::sm90 {
QENGINE_W4A8_SM90_DEFINE(w4a8_sm90_widened_128x128x128_pingpong_lowrank_staged, W4A8TileConfig::kSm90_Widened_128x128x128_Pingpong, LowRank::kStaged)
}  // namespace qengine::w4a8::sm90
