// w4a4_gemm: INT4 x INT4 GEMM with group-64 scales on both operands and the low-rank
// up-projection fused (contract: qengine/w4a4.h), hand-written on mma.sync m16n8k64 s4.
//
// Why not CUTLASS 2.x: its mainloops accumulate int32 over all of K; group-wise scales need each
// group's int32 partial sum scaled by a_scale[m,g] * w_scale[n,g] into an fp32 accumulator
// inside the mainloop. Here the K tile IS one group (64 INT4 = 32 bytes per row), so every
// k-step is one mma per 16x8 sub-tile whose int32 result is converted and scaled right away.
//
// Pipeline: STAGES-deep cp.async ring; a stage holds the A and W tiles (rows of 32 bytes padded
// to 48 so the 8 row addresses of an ldmatrix phase hit distinct banks) and the group's
// a_scale / w_scale slices (4-byte cp.async; scales of one group are strided by K/64 in global).
// Out-of-range rows are zero-filled by cp.async (src-size 0) and never stored.
// Fragments: one ldmatrix.x4 gives the four A registers of a 16x64 s4 tile (matrices: rows
// 0-7/8-15 x bytes 0-15/16-31 = a0..a3 of the PTX layout); one ldmatrix.x4 gives the two B
// registers of two 8-row W tiles.
// Epilogue: the low-rank term in chunks of 16 ranks through shared memory (fp32 FMAs, so the
// fp32 lowrank_act is used unrounded), then bias, conversion and guarded scalar stores.
#include <cuda_runtime.h>

#include <cstdint>

#include "float_io.cuh"
#include "qengine/cp_async.cuh"
#include "qengine/w4a4.h"

namespace qengine {
namespace {

using w4a4::load_as_float;
using w4a4::store_float;

constexpr int kGroupBytes = kW4A4GroupSize / 2;  // 32 bytes of packed INT4 per row per group
constexpr int kRowPitch = 48;                     // smem bytes per tile row (32 data + 16 pad)
constexpr int kRankChunk = 16;
constexpr int kRankPitch = kRankChunk + 1;

template <int BM_, int BN_, int WARPS_M_, int WARPS_N_, int STAGES_>
struct TileShape {
  static constexpr int BM = BM_, BN = BN_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_;
  static constexpr int kThreads = WARPS_M * WARPS_N * 32;
  static constexpr int kWarpTileM = BM / WARPS_M, kWarpTileN = BN / WARPS_N;
  static constexpr int MI = kWarpTileM / 16, NI = kWarpTileN / 8;
  static_assert(kWarpTileM % 16 == 0 && kWarpTileN % 16 == 0, "warp tile must be 16 x 16 multiples");
  static constexpr int kABytes = BM * kRowPitch, kWBytes = BN * kRowPitch;
  static constexpr int kStageBytes = kABytes + kWBytes + (BM + BN) * 4;
  static constexpr int kPipeBytes = STAGES * kStageBytes;
  static constexpr int kEpilogueBytes = (BM + BN) * kRankPitch * 4;
  static constexpr int kSmemBytes = kPipeBytes > kEpilogueBytes ? kPipeBytes : kEpilogueBytes;
  static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");
};

using Tile32x128 = TileShape<32, 128, 1, 4, 4>;
using Tile64x64 = TileShape<64, 64, 2, 2, 4>;
using Tile128x128 = TileShape<128, 128, 2, 4, 3>;

using cp_async::smem_addr;

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// d = a (16x64 s4, row) * b (64x8 s4, col), int32, no accumulate-in: one group's partial sums.
__device__ __forceinline__ void mma_s4_16x8x64(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k64.row.col.s32.s4.s4.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %10, %10, %10};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
}

template <class T>
__device__ __forceinline__ void load_stage(uint8_t* stage, const W4A4GemmParams& p, int m0, int n0, int g) {
  uint8_t* a_s = stage;
  uint8_t* w_s = stage + T::kABytes;
  float* as_s = reinterpret_cast<float*>(stage + T::kABytes + T::kWBytes);
  float* ws_s = as_s + T::BM;
  const int64_t ld = p.K / 2, groups = p.K / kW4A4GroupSize;
  // Two 16-byte chunks per row and group.
  for (int c = threadIdx.x; c < 2 * (T::BM + T::BN); c += T::kThreads) {
    const bool is_a = c < 2 * T::BM;
    const int row = (is_a ? c : c - 2 * T::BM) >> 1, half = c & 1;
    const int grow = (is_a ? m0 : n0) + row;
    const bool ok = grow < (is_a ? p.M : p.N);
    const uint8_t* base = is_a ? p.a : p.w;
    const uint8_t* src = base + (ok ? grow * ld + static_cast<int64_t>(g) * kGroupBytes + half * 16 : 0);
    cp_async::copy_16((is_a ? a_s : w_s) + row * kRowPitch + half * 16, src, ok ? 16 : 0);
  }
  for (int i = threadIdx.x; i < T::BM + T::BN; i += T::kThreads) {
    const bool is_a = i < T::BM;
    const int row = is_a ? i : i - T::BM;
    const int grow = (is_a ? m0 : n0) + row;
    const bool ok = grow < (is_a ? p.M : p.N);
    const float* base = is_a ? p.a_scale : p.w_scale;
    cp_async::copy_4((is_a ? as_s : ws_s) + row, base + (ok ? grow * groups + g : 0), ok ? 4 : 0);
  }
}

template <class T>
__global__ void __launch_bounds__(T::kThreads) w4a4_gemm_kernel(W4A4GemmParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  __shared__ __align__(128) uint8_t smem[T::kSmemBytes];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warp_m = warp % T::WARPS_M, warp_n = warp / T::WARPS_M;
  const int gid = lane >> 2, tig = lane & 3;  // PTX fragment "groupID" and "threadID_in_group"
  const int m0 = blockIdx.y * T::BM, n0 = blockIdx.x * T::BN;
  const int groups = p.K / kW4A4GroupSize;

  float acc[T::MI][T::NI][4];
#pragma unroll
  for (int mi = 0; mi < T::MI; ++mi)
#pragma unroll
    for (int ni = 0; ni < T::NI; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[mi][ni][e] = 0.f;

#pragma unroll
  for (int s = 0; s < T::STAGES - 1; ++s) {
    if (s < groups) load_stage<T>(smem + s * T::kStageBytes, p, m0, n0, s);
    cp_async::commit();
  }

  // ldmatrix lane addresses inside a stage (see the file comment for the matrix order).
  const int a_row = warp_m * T::kWarpTileM + (lane & 7) + ((lane >> 3) & 1) * 8;
  const int a_col = (lane >> 4) * 16;
  const int w_row = warp_n * T::kWarpTileN + (lane & 7) + (lane >> 4) * 8;
  const int w_col = ((lane >> 3) & 1) * 16;

  for (int g = 0; g < groups; ++g) {
    cp_async::wait<T::STAGES - 2>();
    __syncthreads();
    // The stage refilled here was consumed in iteration g - 1, which every thread has left.
    const int next = g + T::STAGES - 1;
    if (next < groups) load_stage<T>(smem + (next % T::STAGES) * T::kStageBytes, p, m0, n0, next);
    cp_async::commit();

    const uint8_t* stage = smem + (g % T::STAGES) * T::kStageBytes;
    const uint8_t* a_s = stage;
    const uint8_t* w_s = stage + T::kABytes;
    const float* as_s = reinterpret_cast<const float*>(stage + T::kABytes + T::kWBytes);
    const float* ws_s = as_s + T::BM;

    uint32_t bfrag[T::NI][2];
#pragma unroll
    for (int nj = 0; nj < T::NI / 2; ++nj) {
      uint32_t r[4];
      ldmatrix_x4(r, w_s + (w_row + nj * 16) * kRowPitch + w_col);
      bfrag[2 * nj][0] = r[0];
      bfrag[2 * nj][1] = r[1];
      bfrag[2 * nj + 1][0] = r[2];
      bfrag[2 * nj + 1][1] = r[3];
    }
    float wsc[T::NI][2];
#pragma unroll
    for (int ni = 0; ni < T::NI; ++ni) {
      const int c = warp_n * T::kWarpTileN + ni * 8 + tig * 2;
      wsc[ni][0] = ws_s[c];
      wsc[ni][1] = ws_s[c + 1];
    }
#pragma unroll
    for (int mi = 0; mi < T::MI; ++mi) {
      uint32_t afrag[4];
      ldmatrix_x4(afrag, a_s + (a_row + mi * 16) * kRowPitch + a_col);
      const int r = warp_m * T::kWarpTileM + mi * 16 + gid;
      const float as0 = as_s[r], as1 = as_s[r + 8];
#pragma unroll
      for (int ni = 0; ni < T::NI; ++ni) {
        int d[4];
        mma_s4_16x8x64(d, afrag, bfrag[ni][0], bfrag[ni][1]);
        acc[mi][ni][0] = fmaf(static_cast<float>(d[0]), as0 * wsc[ni][0], acc[mi][ni][0]);
        acc[mi][ni][1] = fmaf(static_cast<float>(d[1]), as0 * wsc[ni][1], acc[mi][ni][1]);
        acc[mi][ni][2] = fmaf(static_cast<float>(d[2]), as1 * wsc[ni][0], acc[mi][ni][2]);
        acc[mi][ni][3] = fmaf(static_cast<float>(d[3]), as1 * wsc[ni][1], acc[mi][ni][3]);
      }
    }
  }
  cp_async::wait<0>();
  __syncthreads();

  // Low-rank up-projection on the accumulator tile, 16 ranks at a time through shared memory.
  const int rank = p.lowrank_act != nullptr ? p.rank : 0;
  float* la_s = reinterpret_cast<float*>(smem);  // [BM][kRankPitch]
  float* lu_s = la_s + T::BM * kRankPitch;       // [BN][kRankPitch]
  for (int j0 = 0; j0 < rank; j0 += kRankChunk) {
    for (int e = threadIdx.x; e < (T::BM + T::BN) * kRankChunk; e += T::kThreads) {
      const int row = e / kRankChunk, j = j0 + e % kRankChunk;
      float v = 0.f;
      if (row < T::BM) {
        if (m0 + row < p.M && j < rank) v = p.lowrank_act[static_cast<int64_t>(m0 + row) * rank + j];
      } else if (n0 + row - T::BM < p.N && j < rank) {
        v = load_as_float(p.lora_up, p.lora_up_type, static_cast<int64_t>(n0 + row - T::BM) * rank + j);
      }
      la_s[row * kRankPitch + e % kRankChunk] = v;  // rows >= BM land in lu_s
    }
    __syncthreads();
#pragma unroll
    for (int mi = 0; mi < T::MI; ++mi)
#pragma unroll
      for (int ni = 0; ni < T::NI; ++ni)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float* lr = la_s + (warp_m * T::kWarpTileM + mi * 16 + gid + (e >> 1) * 8) * kRankPitch;
          const float* ur = lu_s + (warp_n * T::kWarpTileN + ni * 8 + tig * 2 + (e & 1)) * kRankPitch;
          float s = acc[mi][ni][e];
#pragma unroll
          for (int j = 0; j < kRankChunk; ++j) s = fmaf(lr[j], ur[j], s);
          acc[mi][ni][e] = s;
        }
    __syncthreads();
  }

#pragma unroll
  for (int ni = 0; ni < T::NI; ++ni)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int col = n0 + warp_n * T::kWarpTileN + ni * 8 + tig * 2 + c;
      if (col >= p.N) continue;
      const float b = p.bias != nullptr ? load_as_float(p.bias, p.bias_type, col) : 0.f;
#pragma unroll
      for (int mi = 0; mi < T::MI; ++mi)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int row = m0 + warp_m * T::kWarpTileM + mi * 16 + gid + h * 8;
          if (row < p.M) store_float(p.out, p.out_type, static_cast<int64_t>(row) * p.N + col, acc[mi][ni][h * 2 + c] + b);
        }
    }
#endif
}

template <class T>
cudaError_t launch(const W4A4GemmParams& p, cudaStream_t stream) {
  const dim3 grid((p.N + T::BN - 1) / T::BN, (p.M + T::BM - 1) / T::BM);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  w4a4_gemm_kernel<T><<<grid, T::kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

const char* w4a4_tile_config_name(W4A4TileConfig c) {
  switch (c) {
    case W4A4TileConfig::k32x128: return "w4a4_32x128x64_s4";
    case W4A4TileConfig::k64x64: return "w4a4_64x64x64_s4";
    case W4A4TileConfig::k128x128: return "w4a4_128x128x64_s3";
    default: return "unknown";
  }
}

// No timing stands behind this ladder (W4A4 is not timed on RTX yet): small M gets the tile that
// wastes the fewest rows, and problems with fewer 128x128 tiles than SMs get 64x64 tiles.
W4A4TileConfig w4a4_choose_tile_config(int M, int N, int /*K*/, int sm_count) {
  if (M <= 32) return W4A4TileConfig::k32x128;
  const int64_t tiles128 = static_cast<int64_t>((M + 127) / 128) * ((N + 127) / 128);
  return tiles128 < sm_count ? W4A4TileConfig::k64x64 : W4A4TileConfig::k128x128;
}

cudaError_t w4a4_gemm(const W4A4GemmParams& p, W4A4TileConfig config, cudaStream_t stream) {
  if (p.a == nullptr || p.w == nullptr || p.a_scale == nullptr || p.w_scale == nullptr || p.out == nullptr ||
      p.M < 0 || p.N <= 0 || p.K <= 0 || p.K % kW4A4GroupSize != 0 || p.rank < 0 ||
      (p.lowrank_act != nullptr && p.lora_up == nullptr) ||
      reinterpret_cast<uintptr_t>(p.a) % 16 != 0 || reinterpret_cast<uintptr_t>(p.w) % 16 != 0)
    return cudaErrorInvalidValue;
  if (p.M == 0) return cudaSuccess;
  switch (config) {
    case W4A4TileConfig::k32x128: return launch<Tile32x128>(p, stream);
    case W4A4TileConfig::k64x64: return launch<Tile64x64>(p, stream);
    case W4A4TileConfig::k128x128: return launch<Tile128x128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace qengine
