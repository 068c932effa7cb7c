// fp8 e4m3 W8A8 GEMM, mma.sync (sm_89+), tile config 128x128x64 (bf16 and fp16 outputs).
#include "../sm80/gemm_sm80.cuh"

namespace qengine::sm80 {
QENGINE_SM80_DEFINE(fp8_sm80_128x128x64, cutlass::float_e4m3_t, W8A8TileConfig::kSm80_128x128x64)
}  // namespace qengine::sm80
