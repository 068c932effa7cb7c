// W4A8 GEMM, sm_90a, tile 128x256x128 cooperative in clusters of 4 row tiles (activation tile multicast),
// low-rank branch (rank <= 32) multiplied in the epilogue from operands staged in shared memory (lowrank_staged_epilogue.cuh) (bf16 and fp16 outputs).
#include "w4a8_gemm_sm90.cuh"
#include "../kernels.h"

namespace qengine::w4a8::sm90 {
QENGINE_W4A8_SM90_DEFINE(w4a8_sm90_128x256x128_coop_c4x1_lowrank_staged, W4A8TileConfig::kSm90_128x256x128_Coop_C4x1, LowRank::kStaged)
}  // namespace qengine::w4a8::sm90
