// int8 W8A8 GEMM, sm_90a, tile config 64x160x128_Pingpong_C1x1 (bf16 and fp16 outputs).
#include "gemm_sm90.cuh"

namespace qengine::sm90 {
QENGINE_SM90_DEFINE(int8_sm90_64x160x128_pingpong_c1x1, int8_t, W8A8TileConfig::kSm90_64x160x128_Pingpong_C1x1)
}  // namespace qengine::sm90
