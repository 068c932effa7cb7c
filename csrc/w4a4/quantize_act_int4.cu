// quantize_act_int4: per-token INT4 quantization in groups of 64 along K, optional smoothing
// division, optional low-rank down-projection from the same read of X (contract:
// qengine/w4a4.h). Bit-exact with the reference: the divisions are IEEE __fdiv_rn, the rounding
// is rint (half to even), exactly the spec's float32 rule; nothing is reassociated.
//
// A block owns 32 rows and walks K one group (64 columns) at a time: it stages the smoothed
// group in shared memory as fp32, each warp quantizes 4 rows of it (a lane per two elements,
// which become one packed byte), and, with lora_down, every thread accumulates up to 32 of the
// block's 32 x rank low-rank outputs in registers from the same staged values. Speed is not the
// goal here (issue 4 claims none for W4A4): it is one read of X and exact results.
#include <cuda_runtime.h>

#include "float_io.cuh"
#include "qengine/w4a4.h"

namespace qengine {
namespace {

using w4a4::load_as_float;

constexpr int kThreads = 256;
constexpr int kRows = 32;                       // rows per block; 8 warps x 4 rows
constexpr int kGroup = kW4A4GroupSize;
constexpr int kPitch = kGroup + 1;              // fp32 row pitch in shared memory (bank spread)
constexpr int kMaxOutPerThread = kRows * kW4A4MaxFusedRank / kThreads;  // 32

__global__ void __launch_bounds__(kThreads) quantize_act_int4_kernel(QuantizeActInt4Params p) {
  extern __shared__ float smem[];
  float* xs_s = smem;                           // [kRows][kPitch]  smoothed x of the current group
  float* ld_s = smem + kRows * kPitch;          // [rank][kPitch]   lora_down of the current group
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRows;
  const int rows = p.M - row0 < kRows ? static_cast<int>(p.M - row0) : kRows;
  const int64_t groups = p.K / kGroup;
  const int rank = p.lora_down != nullptr ? p.rank : 0;
  const int outputs = rows * rank;

  float acc[kMaxOutPerThread];
#pragma unroll
  for (int i = 0; i < kMaxOutPerThread; ++i) acc[i] = 0.f;

  for (int64_t g = 0; g < groups; ++g) {
    const int64_t c0 = g * kGroup;
    for (int e = tid; e < kRows * kGroup; e += kThreads) {
      const int r = e / kGroup, c = e % kGroup;
      float v = 0.f;
      if (r < rows) {
        v = load_as_float(p.x, p.x_type, (row0 + r) * p.ldx + c0 + c);
        if (p.smooth != nullptr) v = __fdiv_rn(v, load_as_float(p.smooth, p.smooth_type, c0 + c));
      }
      xs_s[r * kPitch + c] = v;
    }
    for (int e = tid; e < rank * kGroup; e += kThreads) {
      const int j = e / kGroup, c = e % kGroup;
      ld_s[j * kPitch + c] = load_as_float(p.lora_down, p.lora_down_type, static_cast<int64_t>(j) * p.K + c0 + c);
    }
    __syncthreads();

#pragma unroll
    for (int i = 0; i < kRows / (kThreads / 32); ++i) {
      const int r = warp * (kRows / (kThreads / 32)) + i;
      if (r >= rows) break;  // warp-uniform
      const float v0 = xs_s[r * kPitch + 2 * lane], v1 = xs_s[r * kPitch + 2 * lane + 1];
      float amax = fmaxf(fabsf(v0), fabsf(v1));
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
      const float scale = amax > 0.f ? __fdiv_rn(amax, 7.f) : 1.f;
      const int q0 = static_cast<int>(fminf(fmaxf(rintf(__fdiv_rn(v0, scale)), -8.f), 7.f));
      const int q1 = static_cast<int>(fminf(fmaxf(rintf(__fdiv_rn(v1, scale)), -8.f), 7.f));
      const int64_t row = row0 + r;
      p.q[row * (p.K / 2) + c0 / 2 + lane] = static_cast<uint8_t>((q0 & 0xF) | ((q1 & 0xF) << 4));
      if (lane == 0) p.scale[row * groups + g] = scale;
    }

#pragma unroll
    for (int i = 0; i < kMaxOutPerThread; ++i) {
      const int o = tid + i * kThreads;
      if (o < outputs) {
        const float* xr = xs_s + (o / rank) * kPitch;
        const float* lr = ld_s + (o % rank) * kPitch;
        float s = acc[i];
        for (int c = 0; c < kGroup; ++c) s = fmaf(xr[c], lr[c], s);
        acc[i] = s;
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int i = 0; i < kMaxOutPerThread; ++i) {
    const int o = tid + i * kThreads;
    if (o < outputs) p.lowrank_act[(row0 + o / rank) * rank + o % rank] = acc[i];
  }
}

}  // namespace

cudaError_t quantize_act_int4(const QuantizeActInt4Params& p, cudaStream_t stream) {
  if (p.x == nullptr || p.q == nullptr || p.scale == nullptr || p.M < 0 || p.K <= 0 || p.K % kGroup != 0 ||
      p.ldx < p.K || p.rank < 0 || p.rank > kW4A4MaxFusedRank || (p.rank > 0 && p.lora_down != nullptr && p.lowrank_act == nullptr))
    return cudaErrorInvalidValue;
  if (p.M == 0) return cudaSuccess;
  const int rank = p.lora_down != nullptr ? p.rank : 0;
  const size_t smem = static_cast<size_t>(kRows + rank) * kPitch * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t err =
        cudaFuncSetAttribute(quantize_act_int4_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t blocks = (p.M + kRows - 1) / kRows;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  quantize_act_int4_kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace qengine
