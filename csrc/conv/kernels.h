// Entry points of the individual conv kernel translation units (internal to csrc/conv).
#pragma once

#include <cstddef>
#include <cuda_runtime.h>

#include "qengine/conv2d.h"

namespace qengine::conv_sm90 {

#define QENGINE_CONV_SM90_DECLARE(NAME)                                  \
  cudaError_t NAME##_run(const QConv2dParams& p, cudaStream_t stream); \
  size_t NAME##_workspace(const QConv2dParams& p);

QENGINE_CONV_SM90_DECLARE(int8_conv_sm90_128x128x128_s4)
QENGINE_CONV_SM90_DECLARE(int8_conv_sm90_128x160x128_s4)
QENGINE_CONV_SM90_DECLARE(int8_conv_sm90_64x160x128_s4)
QENGINE_CONV_SM90_DECLARE(int8_conv_sm90_256x128x128_s4)
QENGINE_CONV_SM90_DECLARE(int8_conv_sm90_256x160x128_s4)
QENGINE_CONV_SM90_DECLARE(int8_conv_sm90_256x128x128_c1x2_s4)
QENGINE_CONV_SM90_DECLARE(fp8_conv_sm90_128x128x128_s4)
QENGINE_CONV_SM90_DECLARE(fp8_conv_sm90_128x160x128_s4)
QENGINE_CONV_SM90_DECLARE(fp8_conv_sm90_64x160x128_s4)
QENGINE_CONV_SM90_DECLARE(fp8_conv_sm90_256x128x128_s4)
QENGINE_CONV_SM90_DECLARE(fp8_conv_sm90_256x160x128_s4)
QENGINE_CONV_SM90_DECLARE(fp8_conv_sm90_256x128x128_c1x2_s4)

#undef QENGINE_CONV_SM90_DECLARE

}  // namespace qengine::conv_sm90
