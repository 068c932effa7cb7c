// fp8 e4m3 W8A8 GEMM, mma.sync (sm_89+), tile config 32x64x128 (bf16 and fp16 outputs).
#include "../sm80/gemm_sm80.cuh"

namespace qengine::sm80 {
QENGINE_SM80_DEFINE(fp8_sm80_32x64x128, cutlass::float_e4m3_t, W8A8TileConfig::kSm80_32x64x128)
}  // namespace qengine::sm80
