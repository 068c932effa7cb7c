// LayerNorm + per-token quantization: see qengine/layer_norm_quant.h for the contract.
//
// A warp owns a row (C <= 4096 16-bit elements: up to 16 vectors of 16 bytes per lane, all loaded
// before any is used, as in quantize_act.cu's row kernel). Mean and variance are two reductions
// over the registers (two-pass variance, no cancellation); the normalized row replaces x in the
// registers, rounded to x_type as torch's LayerNorm output is, and is then quantized exactly as
// quantize_act quantizes a row (row_quant.cuh).
#include <climits>
#include <cstdint>
#include <type_traits>

#include "qengine/layer_norm_quant.h"
#include "row_quant.cuh"

namespace qengine {
namespace {

using namespace rowq;

constexpr int kWarpsPerBlock = 4;

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

template <typename T, typename S, QuantType Q, int kVecs>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
layer_norm_quant_kernel(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias, float eps,
                        const S* __restrict__ smooth, uint8_t* __restrict__ q, float* __restrict__ scale_out, int64_t M,
                        int C) {
  using V = Vec<T>;
  constexpr int kN = V::kN;
  using OB = typename OutBytes<kN>::type;
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32;
  if (row >= M) return;  // whole warps only: the shuffles below see all 32 lanes
  const int nvec = C / kN;
  const V* xr = reinterpret_cast<const V*>(x + row * C);

  V regs[kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (lane + 32 * i < nvec) regs[i] = xr[lane + 32 * i];

  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (lane + 32 * i < nvec) {
#pragma unroll
      for (int j = 0; j < kN; ++j) sum += to_float(regs[i].v[j]);
    }
  const float inv_c = 1.f / static_cast<float>(C);
  const float mean = warp_sum(sum) * inv_c;
  float sq = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i)
    if (lane + 32 * i < nvec) {
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        const float d = to_float(regs[i].v[j]) - mean;
        sq = fmaf(d, d, sq);
      }
    }
  const float rstd = rsqrtf(warp_sum(sq) * inv_c + eps);

  // Normalize in place (rounded to T, torch's LayerNorm output) and take the row's absmax.
  const V* wr = reinterpret_cast<const V*>(weight);
  const V* br = reinterpret_cast<const V*>(bias);
  float amax = 0.f;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int vi = lane + 32 * i;
    if (vi < nvec) {
      V wv, bv;
      if (weight != nullptr) wv = wr[vi];
      if (bias != nullptr) bv = br[vi];
#pragma unroll
      for (int j = 0; j < kN; ++j) {
        float y = (to_float(regs[i].v[j]) - mean) * rstd;
        if (weight != nullptr) y *= to_float(wv.v[j]);
        if (bias != nullptr) y += to_float(bv.v[j]);
        regs[i].v[j] = from_float<T>(y);
        amax = fmaxf(amax, fabsf(smoothed<T, S>(regs[i].v[j], smooth, int64_t(vi) * kN + j)));
      }
    }
  }
  amax = warp_max(amax);
  const float scale = amax > 0.f ? __fdiv_rn(amax, Q == QuantType::kInt8 ? 127.f : 448.f) : 1.f;
  if (lane == 0) scale_out[row] = scale;
  const ExactDiv div{scale, __frcp_rn(scale)};
  OB* qr = reinterpret_cast<OB*>(q + row * C);
  auto emit = [&](auto fast) {
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int vi = lane + 32 * i;
      if (vi < nvec) qr[vi] = quantize_vec<decltype(fast)::value, Q>(regs[i], smooth, int64_t(vi) * kN, div);
    }
  };
  if (ExactDiv::exact_for(scale)) {
    emit(std::true_type{});
  } else {
    emit(std::false_type{});
  }
}

template <typename T, typename S, QuantType Q>
cudaError_t launch(const LayerNormQuantParams& p, cudaStream_t stream) {
  const int64_t blocks = (p.M + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > INT_MAX) return cudaErrorInvalidValue;
  const int per_lane = static_cast<int>((p.C / Vec<T>::kN + 31) / 32);
  auto run = [&](auto kernel) {
    kernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, 0, stream>>>(
        static_cast<const T*>(p.x), static_cast<const T*>(p.weight), static_cast<const T*>(p.bias), p.eps,
        static_cast<const S*>(p.smooth), static_cast<uint8_t*>(p.q), p.scale, p.M, static_cast<int>(p.C));
    return cudaGetLastError();
  };
  if (per_lane <= 2) return run(layer_norm_quant_kernel<T, S, Q, 2>);
  if (per_lane <= 4) return run(layer_norm_quant_kernel<T, S, Q, 4>);
  if (per_lane <= 8) return run(layer_norm_quant_kernel<T, S, Q, 8>);
  return run(layer_norm_quant_kernel<T, S, Q, 16>);
}

template <typename T, QuantType Q>
cudaError_t dispatch_smooth(const LayerNormQuantParams& p, cudaStream_t stream) {
  if (p.smooth == nullptr) return launch<T, void, Q>(p, stream);
  if (p.smooth_type == p.x_type) return launch<T, T, Q>(p, stream);
  if (p.smooth_type == FloatType::kFP32) return launch<T, float, Q>(p, stream);
  return cudaErrorInvalidValue;
}

template <QuantType Q>
cudaError_t dispatch_input(const LayerNormQuantParams& p, cudaStream_t stream) {
  switch (p.x_type) {
    case FloatType::kBF16: return dispatch_smooth<__nv_bfloat16, Q>(p, stream);
    case FloatType::kFP16: return dispatch_smooth<__half, Q>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

cudaError_t layer_norm_quant(const LayerNormQuantParams& p, cudaStream_t stream) {
  if (p.M < 0 || p.C <= 0 || p.C % 16 || p.C > kLayerNormQuantMaxC || !aligned16(p.x) || !aligned16(p.q) ||
      !aligned16(p.weight) || !aligned16(p.bias) || !(p.eps >= 0.f))
    return cudaErrorInvalidValue;
  if (p.M == 0) return cudaSuccess;
  return p.q_type == QuantType::kInt8 ? dispatch_input<QuantType::kInt8>(p, stream)
                                      : dispatch_input<QuantType::kFP8E4M3>(p, stream);
}

}  // namespace qengine
