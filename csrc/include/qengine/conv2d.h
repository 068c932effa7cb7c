// W8A8 conv2d over NHWC (channels_last) activations (torch-free launchers).
//
//   out[b,p,q,o] = to_out( x_scale * w_scale[o] * sum_{r,s,c} xq[b, p*sh - ph + r*dh, q*sw - pw + s*dw, c]
//                                                                  * w[o, r, s, c]
//                          + bias[o] + beta * residual[b,p,q,o] )
//
// Operands:
//   xq       [B, H, W, C] int8 | fp8 e4m3, packed NHWC (the output of conv_quantize_nhwc)
//   x_scale  [1] fp32 on the device: ONE scale for the whole activation tensor. Per-pixel scales
//            would not factor out of the sum over (r, s, c) (it mixes pixels), so a conv needs a
//            scale shared by every pixel of an image; we take one per tensor (static from
//            calibration, or the dynamic absmax computed by conv_absmax_nhwc), which also
//            serves a batch in one launch with a scalar epilogue operand.
//   w        [O, kh, kw, Cw] same type as xq, row-major, the conv reads channels [0, C) of each
//            (o, r, s) row: Cw >= C lets the two halves of a split-shortcut weight be used in place.
//   w_scale  [O] fp32; bias [O] out_type or nullptr
//   residual [B, Ho, Wo, O] out_type or nullptr (beta = 1 when given, else 0); may alias out.
//   out      [B, Ho, Wo, O] bf16 | fp16, packed NHWC
// Limits: C % 16 == 0 and Cw % 16 == 0 (16-byte TMA rows), O % 8 == 0 (16-byte output rows).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "qengine/types.h"

namespace qengine {

struct QConv2dParams {
  const void* x;
  const float* x_scale;
  const void* w;
  int64_t w_channels;  // Cw: channel extent of a weight row (>= C)
  const float* w_scale;
  const void* bias;      // may be nullptr
  const void* residual;  // may be nullptr; may equal out
  void* out;
  int B, H, W, C, O, kh, kw;
  int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int Ho, Wo;
  QuantType in_type;
  FloatType out_type;  // kBF16 or kFP16
  int sm_count;
  int splits;  // sm90: CTAs sharing each output tile's K loop (<= 1: none); see QConvPlan
  void* workspace;
  size_t workspace_bytes;
};

// Named tile configs of the sm90 implicit-GEMM conv (CUTLASS 3 ConvUniversal: TMA im2col loads
// of the activation, wgmma, non-persistent: CUTLASS 4.2 has no persistent schedule for sm90 conv;
// our kernel class adds split-K, see QConvPlan, two consumer warpgroups for the 256-row tiles and
// clusters with TMA multicast). All 4 stages. Chosen by a cost model (configs.cu).
enum class QConvTileConfig : int {
  kSm90_128x128x128_S4 = 0,   // the general one
  kSm90_128x160x128_S4 = 1,   // N = 160 divides 320/640/1280: SDXL 640 ch at 64x64 in one wave
  kSm90_64x160x128_S4 = 2,    // half-height: SDXL 1280 ch at 32x32 in one wave (128 tiles)
  kIm2colGemmSm80 = 3,        // explicit int8/fp8 im2col + the W8A8 mma.sync GEMM (sm_80/86/89)
  kSm90_256x128x128_S4 = 4,   // two consumer warpgroups: 3/4 of the L2 bytes per MMA of 128x128 (deep convs)
  kSm90_256x160x128_S4 = 5,   // two consumer warpgroups, N = 160: 2/3 of the L2 bytes per MMA of 128x128
  kSm90_256x128x128_C1x2_S4 = 6,  // 256x128, clusters of 2 along N sharing the activation tile: 1/2
                                  // the L2 bytes per MMA of 128x128 (SDXL 1280 ch at 32x32, split-K)
  kCount = 7,
};

const char* conv_tile_config_name(QConvTileConfig c);
bool conv_tile_config_is_sm90(QConvTileConfig c);
bool conv_tile_config_compiled(QConvTileConfig c, QuantType t);

// A tile config plus split-K: `splits` CTAs share each output tile's K loop (sm90 configs only),
// the last one adding the others' partial sums before the epilogue (csrc/conv/sm90/conv2d_splitk.cuh).
// For the deep UNet convs whose few output tiles leave SMs idle.
struct QConvPlan {
  QConvTileConfig config;
  int splits;
};
constexpr int kMaxConvSplits = 16;
// Readable heuristic over the implicit GEMM (M = B*Ho*Wo, N = O, K = kh*kw*C) for sm90.
QConvPlan choose_conv_plan(int64_t M, int N, int64_t K, int sm_count);

size_t qconv2d_sm90_workspace_bytes(const QConv2dParams& p, QConvTileConfig c);
// cudaErrorInvalidValue: unsupported arguments; cudaErrorNotSupported: not compiled.
cudaError_t qconv2d_sm90(const QConv2dParams& p, QConvTileConfig c, cudaStream_t stream);

// ---- activation pre-pass (every arch)

// x is a [rows, cols] bf16|fp16 view with row stride ld (elements): a packed NHWC tensor is
// rows = B*H*W, ld = cols = C; one half of a channel concat is cols = C1 inside ld = C1 + C2,
// which is how the split-shortcut halves are read in place. cols % 8 == 0, ld % 8 == 0, x
// 16-byte aligned.
//
// absmax_bits[0] = max |x| as float bits (zeroed by the launcher on `stream`, then atomicMax).
cudaError_t conv_absmax(const void* x, int64_t rows, int64_t cols, int64_t ld, FloatType x_type,
                        unsigned int* absmax_bits, cudaStream_t stream);

// q [rows, cols] packed = round_to_format(x / scale), scale = static_scale[0] if static_scale
// else (absmax > 0 ? absmax / QMAX : 1) from absmax_bits; writes that scale to scale_out[0] (may
// be nullptr). IEEE division and round-half-even: bit-exact with the reference quantizer.
cudaError_t conv_quantize(const void* x, int64_t rows, int64_t cols, int64_t ld, FloatType x_type, QuantType q_type,
                          const float* static_scale, const unsigned int* absmax_bits, void* q, float* scale_out,
                          cudaStream_t stream);

// Explicit im2col of a quantized NHWC tensor (for the mma.sync GEMM path): cols [B*Ho*Wo, kh*kw*C]
// with (r, s, c) order, zeros where the window leaves the image. 1-byte elements.
cudaError_t conv_im2col(const void* xq, int B, int H, int W, int C, int kh, int kw, int stride_h, int stride_w,
                        int pad_h, int pad_w, int dil_h, int dil_w, int Ho, int Wo, void* cols, cudaStream_t stream);

}  // namespace qengine
