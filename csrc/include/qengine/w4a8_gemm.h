// W4A8 GEMM: INT4 weights (per output channel), INT8 activations (per token), sm_90a
// (torch-free launchers).
//
//   out[m,n] = to_out( float(sum_k a[m,k] * w[n,k]) * a_scale[m] * w_scale[n] + bias[n] + lowrank[m,n] )
//
// Operands:
//   a        [M, K] int8, row-major, row stride lda (elements), 16-byte aligned rows
//   a_scale  [M] fp32 (per token)
//   w        N*K/2 bytes: INT4 weights in the prepacked layout of w4a8_prepack (see
//            csrc/w4a8/sm90/weight_layout.cuh and qengine/formats/w4a8_layout.py); stays 4-bit in
//            GPU memory and is widened to INT8 in registers right before the wgmma
//   w_scale  [N] fp32 (per output channel)
//   bias     [N] out_type, or nullptr
//   lowrank  [M, N] out_type, row stride ldo, or nullptr: the low-rank branch's product
//            lowrank_act @ lora_up^T, added in the epilogue (read once, never written back)
//   lowrank_act [M, rank] and lora_up [N, rank] out_type (row-major), or nullptr: the same
//            branch unmultiplied, for the configs where w4a8_config_fuses_lowrank(config, rank),
//            which multiply it in their epilogue with 16-bit MMAs. The split-K configs take
//            lowrank_act in fp32 (p.lowrank_act) and round it to out_type as the product path does;
//            the cooperative configs take it already rounded (p.lowrank_act_out), since their
//            epilogue copies it into shared memory as it is. rank % 16 == 0; the cooperative
//            configs also need both pointers 16-byte aligned. At most one of lowrank /
//            lowrank_act / lowrank_act_out is set.
//   out      [M, N] bf16 | fp16, row-major, row stride ldo
// Limits: K % 32 == 0, N % 16 == 0 (the 16x32 weight shuffle atom; also 16-byte rows), M >= 1,
// K <= kW4A8MaxK. INT8 x INT8 (widened INT4) accumulates in int32: exact. The wgmma configs widen
// the weights to 16 x w (sm90/widen_int4_times16.cuh), so |acc| <= K x 128 x 128 must stay
// below 2^31.
//
// The kernel computes the transposed product out^T = W . A^T so that the 4-bit operand is the
// register-sourced A operand of wgmma (only A can come from registers, where the widening
// happens); the tile shapes below are (weight rows) x (tokens) x K.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "qengine/types.h"

namespace qengine {

constexpr int64_t kW4A8MaxK = 65536;

struct W4A8GemmParams {
  const int8_t* a;
  int64_t lda;
  const float* a_scale;
  const uint8_t* w;
  const float* w_scale;
  const void* bias;     // may be nullptr
  const void* lowrank;  // may be nullptr
  const float* lowrank_act;     // may be nullptr (the split-K configs that fuse the branch)
  const void* lowrank_act_out;  // out_type, may be nullptr (the cooperative configs that fuse the branch)
  const void* lora_up;          // out_type, with lowrank_act or lowrank_act_out
  int rank;                  // columns of lowrank_act, % 16 == 0
  void* out;
  int64_t ldo;
  int M, N, K;
  FloatType out_type;   // kBF16 or kFP16
  int sm_count;
  void* workspace;
  size_t workspace_bytes;
};

// Named tile configs, (weight rows) x (tokens) x K, all sm_90a: TMA + register-sourced wgmma,
// warp-specialized, with the persistent or the stream-K tile scheduler; or mma.sync split-K.
enum class W4A8TileConfig : int {
  kSm90_128x128x128_Coop = 0,      // many tiles where 256-token tiles would under-fill the GPU
  kSm90_64x128x128_Pingpong = 1,   // mid-size problems whose 128x128 tiles would leave SMs idle
  kSm90_64x64x128_Pingpong = 2,    // 33..64 tokens on small layers, or when even 64x128 tiles under-fill one wave
  // Few tokens (the weights' bytes are the cost): mma.sync INT8 on widened weights, 128 weight
  // rows x up to 64 tokens per CTA, K split over a cluster so that every SM streams weights;
  // 128 or 256 K per pipeline stage. Correct for any M (token blocks of 64); the heuristic
  // picks it for M <= 16, and up to 32 on small layers or deep K.
  kSm90_Mma_128x64x128_SplitK = 3,
  kSm90_Mma_128x64x256_SplitK = 4,
  // 17..64 tokens: tiles of 128 weight rows x 64 (or 32) tokens whose K is shared out over all
  // SMs by CUTLASS's stream-K scheduler (wgmma, partial tiles reduced through the workspace).
  kSm90_128x64x128_CoopStreamK = 5,
  kSm90_128x32x128_CoopStreamK = 6,
  // Many tokens (where these tiles fill 2/3 of a wave): 256 tokens per tile, so each widened
  // weight fragment feeds twice the MMAs of the 128x128 tile.
  kSm90_128x256x128_Coop = 7,
  // The 128x256 tile in clusters of 2 row tiles that share (multicast) the activation tile, which
  // is most of the L2 reads at many tokens. (128x128 in clusters gained nothing: notes/w4a8.md.)
  kSm90_128x256x128_Coop_C2x1 = 8,
  // 224 tokens per tile, clustered likewise: fills the waves where 256-token tiles leave the
  // last one emptier (FLUX's 4608 tokens on 3072-wide layers).
  kSm90_128x224x128_Coop_C2x1 = 9,
  kCount = 10,
};

const char* w4a8_tile_config_name(W4A8TileConfig c);
// Readable heuristic over (M, N) and the number of SMs (tile counts vs one wave).
W4A8TileConfig w4a8_choose_tile_config(int M, int N, int K, int sm_count);
// Whether this binary holds the sm_90a kernels (built with 90a in QENGINE_CUDA_ARCHS).
bool w4a8_kernels_compiled();

// The largest rank the cooperative configs multiply in their epilogue (staged in shared memory).
constexpr int kW4A8StagedMaxRank = 32;
// Whether config c takes a low-rank branch of this rank unmultiplied (lowrank_act + lora_up)
// instead of its [M, N] product: the split-K configs for any rank % 16 == 0, the cooperative
// wgmma configs (128x256, 128x224, 128x128) for rank % 16 == 0 up to kW4A8StagedMaxRank.
bool w4a8_config_fuses_lowrank(W4A8TileConfig c, int rank);

size_t w4a8_gemm_workspace_bytes(const W4A8GemmParams& p, W4A8TileConfig c);
// cudaErrorInvalidValue: unsupported arguments; cudaErrorNotSupported: not compiled in this build.
cudaError_t w4a8_gemm(const W4A8GemmParams& p, W4A8TileConfig c, cudaStream_t stream);

}  // namespace qengine
