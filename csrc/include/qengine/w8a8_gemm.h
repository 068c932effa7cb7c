// W8A8 GEMM with a dequantizing epilogue (torch-free launchers).
//
//   out[m,n] = to_out( float(sum_k a[m,k] * w[n,k]) * a_scale[m] * w_scale[n] + bias[n] )
//
// Operands (TN GEMM, what wgmma / mma.sync want: both operands K-major):
//   a       [M, K] int8 | fp8 e4m3, row-major, row stride lda (elements), 16-byte aligned rows
//   a_scale [M] fp32 (per token)
//   w       [N, K] same type as a, row-major (i.e. B is column-major K x N), row stride ldw
//   w_scale [N] fp32 (per output channel)
//   bias    [N] out_type, or nullptr
//   out     [M, N] bf16 | fp16, row-major, row stride ldo
// Limits: K % 16 == 0, N % 8 == 0 (16-byte output rows), M >= 1.
// INT8 accumulates in int32 (exact); FP8 accumulates in fp32 (sm90: wgmma "fast accumulation").
#pragma once

#include <cstddef>
#include <cstdint>
#include <cuda_runtime.h>

#include "qengine/types.h"

namespace qengine {

struct W8A8GemmParams {
  const void* a;
  int64_t lda;
  const float* a_scale;
  const void* w;
  int64_t ldw;
  const float* w_scale;
  const void* bias;  // may be nullptr
  void* out;
  int64_t ldo;
  int M, N, K;
  QuantType in_type;
  FloatType out_type;   // kBF16 or kFP16
  int sm_count;         // multiprocessors of the device (persistent schedulers size their grid by it)
  void* workspace;      // from w8a8_gemm_workspace_bytes, may be nullptr when that is 0
  size_t workspace_bytes;
  // Fused SVDQuant low-rank branch (rank == 0: none), added before the rounding to out_type:
  //   out[m,n] += sum_j lowrank_act[m,j] * lora_up[n,j]      (fp32 arithmetic)
  // Only the sm90 configs fuse it (w8a8_gemm returns cudaErrorNotSupported for the others).
  const float* lowrank_act = nullptr;  // [M, rank] fp32, row-major, contiguous, 16-byte aligned
  const void* lora_up = nullptr;       // [N, rank] bf16, row-major, contiguous, 16-byte aligned
  int rank = 0;                        // multiple of 8
  // Persistent tile order of the sm90 configs (runtime arguments, the same kernels): raster 0 =
  // CUTLASS's choice (along M when there are more N tiles than M tiles, else along N), 1 = along
  // M, 2 = along N; swizzle = 1, 2, 4 or 8 neighbouring tiles visited together (L2 reuse).
  // choose_schedule() picks them per shape; the mma.sync configs ignore them.
  int raster = 0;
  int swizzle = 1;
};

// Named tile configurations. The sm90 ones use wgmma + TMA, warp-specialized, persistent; the
// sm80 ones use mma.sync (CUTLASS 2.x multistage) and also run on sm_89/sm_90 (FP8 needs sm_89+).
// Configs measured and dropped (notes/kernels.md): 128x256x128 cooperative 2x1 and 128x128x128
// cooperative stream-K lost to 128x128x128 ping-pong on every FLUX/SD3/SDXL/SD1.5 shape (H200).
enum class W8A8TileConfig : int {
  kSm90_64x64x128_Pingpong_C1x4 = 0,     // few tiles: M <= 64 or under half a wave of 128x128 tiles
  kSm90_128x128x128_Pingpong_C2x1 = 1,   // FP8 with more M tiles than N tiles
  kSm80_32x64x128 = 2,                   // mma.sync, small M; on sm90 also tiny INT8 problems
  kSm80_128x128x64 = 3,                  // mma.sync, large M
  kSm90_128x128x128_Pingpong_C1x2 = 4,   // same tile, cluster along N (A multicast): INT8, wide FP8
  kSm90_64x160x128_Pingpong_C1x1 = 5,    // deep K where 128x128 tiles leave much of the last wave idle
  kCount = 6,
};

const char* tile_config_name(W8A8TileConfig c);
bool tile_config_is_sm90(W8A8TileConfig c);

// Readable heuristic over (M, N, K): `sm90` when the wgmma kernels can run, else mma.sync.
W8A8TileConfig choose_tile_config(int M, int N, int K, QuantType t, bool sm90);

// The persistent tile order (W8A8GemmParams::raster / swizzle) for an sm90 config and shape.
void choose_schedule(int M, int N, int K, W8A8TileConfig c, QuantType t, int* raster, int* swizzle);

// Whether this binary holds kernels for the config and input type (for the compiled archs).
bool tile_config_compiled(W8A8TileConfig c, QuantType t);
// Whether the config has a fused low-rank epilogue variant in this binary.
bool tile_config_has_lowrank(W8A8TileConfig c, QuantType t);

size_t w8a8_gemm_workspace_bytes(const W8A8GemmParams& p, W8A8TileConfig c);

// Runs the GEMM with the given config. cudaErrorInvalidValue: unsupported arguments;
// cudaErrorNotSupported: config not compiled into this binary (or no fused low-rank variant).
cudaError_t w8a8_gemm(const W8A8GemmParams& p, W8A8TileConfig c, cudaStream_t stream);

}  // namespace qengine
