// int8 W8A8 GEMM, sm_90a, tile config 128x128x128_Pingpong_C1x2 with the fused low-rank epilogue (bf16 and fp16 outputs).
#include "gemm_sm90.cuh"

namespace qengine::sm90 {
QENGINE_SM90_DEFINE_LOWRANK(int8_sm90_128x128x128_pingpong_c1x2, int8_t, W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2)
}  // namespace qengine::sm90
