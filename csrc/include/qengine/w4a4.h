// W4A4: INT4 activations x INT4 weights with group-64 scales along K on both sides, for the
// mma.sync s4 tensor cores of sm_80/86/89 (the same code runs, slowly, on sm_90). Torch-free
// launchers: raw pointers, sizes and a stream in, cudaError_t out.
//
// Packed INT4 (qengine.formats.spec): two's-complement nibbles, two per byte along K, element
// 2i in the low nibble of byte i. Groups are 64 consecutive K elements (32 bytes).
//
// quantize_act_int4 (bit for bit the reference qengine.ops.reference.quantize_act_int4):
//   xs[m,k]      = float(x[m,k]) / float(smooth[k])     (IEEE fp32 division; no smooth: xs = x)
//   scale[m,g]   = absmax(xs[m, 64g : 64g+64]) / 7      (IEEE fp32 division), or 1 if absmax == 0
//   q[m,k]       = clamp(rint_half_even(xs[m,k] / scale[m,k/64]), -8, 7), packed two per byte
//   lowrank[m,j] = sum_k xs[m,k] * lora_down[j,k]       (fp32 FMAs; not bit-exact with a BLAS)
//
// w4a4_gemm:
//   out[m,n] = sum_g (a_scale[m,g] * w_scale[n,g]) * sum_{k in g} a[m,k] * w[n,k]
//              + sum_j lowrank_act[m,j] * lora_up[n,j] + bias[n]
//   The int32 sum of one group comes from one mma.sync m16n8k64; it is scaled into an fp32
//   accumulator in the mainloop; the low-rank term is fp32 FMAs after the mainloop.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "qengine/types.h"

namespace qengine {

constexpr int kW4A4GroupSize = 64;
// The fused low-rank down-projection keeps rank outputs per row in registers.
constexpr int kW4A4MaxFusedRank = 256;

struct QuantizeActInt4Params {
  const void* x;            // [M, K] x_type, rows ldx elements apart
  int64_t ldx;
  FloatType x_type;
  const void* smooth;       // [K] smooth_type, or nullptr
  FloatType smooth_type;
  const void* lora_down;    // [rank, K] lora_down_type, contiguous, or nullptr (then rank = 0)
  FloatType lora_down_type;
  int rank;                 // 0..kW4A4MaxFusedRank
  uint8_t* q;               // [M, K/2] packed INT4, contiguous
  float* scale;             // [M, K/64] fp32, contiguous
  float* lowrank_act;       // [M, rank] fp32, contiguous (unused when rank == 0)
  int64_t M;
  int64_t K;                // positive multiple of 64
};

// cudaErrorInvalidValue for unsupported arguments, else the launch's error.
cudaError_t quantize_act_int4(const QuantizeActInt4Params& p, cudaStream_t stream);

// Named tile configs (block tile M x N; K tile = one group of 64). Tests force each.
enum class W4A4TileConfig : int { k32x128 = 0, k64x64 = 1, k128x128 = 2, kCount = 3 };

const char* w4a4_tile_config_name(W4A4TileConfig c);
W4A4TileConfig w4a4_choose_tile_config(int M, int N, int K, int sm_count);

struct W4A4GemmParams {
  const uint8_t* a;          // [M, K/2] packed INT4, contiguous, 16-byte aligned
  const float* a_scale;      // [M, K/64]
  const uint8_t* w;          // [N, K/2] packed INT4, contiguous, 16-byte aligned
  const float* w_scale;      // [N, K/64]
  const void* bias;          // [N] bias_type, or nullptr
  FloatType bias_type;
  const float* lowrank_act;  // [M, rank] fp32, or nullptr (then rank = 0)
  const void* lora_up;       // [N, rank] lora_up_type
  FloatType lora_up_type;
  int rank;                  // any rank >= 0 (processed in chunks of 16)
  void* out;                 // [M, N] out_type, contiguous
  FloatType out_type;
  int M, N, K;               // K a positive multiple of 64; any M, N >= 1
};

cudaError_t w4a4_gemm(const W4A4GemmParams& p, W4A4TileConfig config, cudaStream_t stream);

}  // namespace qengine
