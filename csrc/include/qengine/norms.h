// Fused normalization kernels for the non-GEMM work around the quantized layers (torch-free
// launchers). They replace chains of small eager ops that, at diffusion-model sizes, cost as much
// GPU time as the GEMMs they feed (profiles in notes/kernels.md).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "qengine/types.h"

namespace qengine {

// Per-head RMSNorm of attention queries/keys followed by rotary position embedding, as in
// FLUX/SD3 attention (diffusers: attn.norm_q, then apply_rotary_emb with interleaved pairs):
//   n[d]  = bf16( (x[d] * rstd) * w[d] ),  rstd = rsqrt(mean_d(x^2) + eps)   (fp32 math)
//   out[2i]   = bf16( n[2i]   * cos[s,2i]   - n[2i+1] * sin[s,2i]   )
//   out[2i+1] = bf16( n[2i+1] * cos[s,2i+1] + n[2i]   * sin[s,2i+1] )      (no FMA contraction)
// Two sources may be written into one output along the sequence: the prefix (text tokens, own
// norm weight) first, then x. Output [B, S_prefix + S, H, D] contiguous; cos/sin [S_prefix + S, D].
struct RmsNormRopeParams {
  const void* x;          // [B, S, H, D] x_type; element (b,s,h,d) at b*x_sb + s*x_ss + h*D + d
  int64_t x_sb, x_ss;     // strides in elements (the head and d strides are D and 1)
  const void* w;          // [D] x_type
  const void* prefix;     // [B, S_prefix, H, D] x_type, or nullptr
  int64_t p_sb, p_ss;
  const void* prefix_w;   // [D] x_type (nullptr when no prefix)
  const float* cos;       // [S_prefix + S, D] fp32 contiguous, or nullptr: no rotary embedding
  const float* sin;
  void* out;              // [B, S_prefix + S, H, D] x_type contiguous
  FloatType x_type;       // kBF16 or kFP16
  int64_t B, S, S_prefix;
  int H, D;               // D in {64, 128, 256}
  float eps;
};
cudaError_t rmsnorm_rope(const RmsNormRopeParams& p, cudaStream_t stream);

// GroupNorm over an NHWC (channels_last) activation, optionally followed by SiLU:
//   mean/var per (n, group) over HW x C/G values (fp32; var is the biased variance)
//   y = bf16( x * a[c] + b[c] ),  a = rstd * gamma[c],  b = beta[c] - mean * a     (torch's form)
//   silu: y = bf16( float(y) / (1 + exp(-float(y))) )  (applied to the rounded GroupNorm output)
// Statistics use sums shifted by the group's first element, so |mean| >> std loses no precision.
// Two kernels: partial sums per (n, pixel chunk), then normalization (which reduces the partials).
// add (optional, a UNet resnet's time embedding): the input is x' = x_type( x + add[n, c] ), as
//   the eager `h + temb` rounds it, in the statistics and in the normalization.
// quantize (optional, the input of a quantized conv with a static scale): the output is
//   q = Q( y / q_scale ), y the rounded 16-bit value above, with exactly the conv pre-pass's
//   rounding (csrc/conv/static_quant.cuh): INT8 round-half-even of the clamped quotient, FP8 E4M3
//   satfinite round-to-nearest-even. The 16-bit y is never written.
struct GroupNormNhwcParams {
  const void* x;          // [N, HW, C] x_type contiguous (channels_last NCHW)
  const void* gamma;      // [C] x_type or nullptr
  const void* beta;       // [C] x_type or nullptr
  const void* add;        // [N, C] x_type contiguous, or nullptr
  void* y;                // [N, HW, C]: x_type, or 1-byte q_type with quantize
  float* workspace;       // group_norm_nhwc_workspace_floats(...) floats
  FloatType x_type;       // kBF16 or kFP16
  int64_t N, HW;
  int C, G;               // C % G == 0, (C / G) even
  float eps;
  bool silu;
  bool quantize;          // write q_type with the device scale *q_scale instead of x_type
  QuantType q_type;
  const float* q_scale;   // [1] fp32 on the device (quantize only)
  int sm_count;
};
int64_t group_norm_nhwc_workspace_floats(int64_t N, int64_t HW, int C, int G, int sm_count);
cudaError_t group_norm_nhwc(const GroupNormNhwcParams& p, cudaStream_t stream);

}  // namespace qengine
