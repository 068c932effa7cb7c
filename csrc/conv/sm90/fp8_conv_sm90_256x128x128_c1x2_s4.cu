// fp8 implicit-GEMM conv2d, sm_90a, tile config kSm90_256x128x128_C1x2_S4 (two consumer warpgroups,
// clusters of two CTAs along N sharing the activation tile).
#include "conv2d_sm90.cuh"
#include "../kernels.h"

namespace qengine::conv_sm90 {
QENGINE_CONV_SM90_DEFINE(fp8_conv_sm90_256x128x128_c1x2_s4, cutlass::float_e4m3_t, QConvTileConfig::kSm90_256x128x128_C1x2_S4)
}  // namespace qengine::conv_sm90
