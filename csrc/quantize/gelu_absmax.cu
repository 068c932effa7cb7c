// GELU with the row absmax (qengine/quantize_act.h, gelu_absmax): the producer half of the gelu-cat
// ops with a low-rank branch. Knowing each row's absmax up front lets the tile kernel quantize in
// the same pass that computes the down-projection, so the [x | gelu] row is read twice in all
// instead of three times (torch's GELU, then the tile kernel's absmax pass and quantize pass).
//
// A block per row, each thread walking 16-byte vectors t, t + G, ... with kU loads in flight before
// any is used (the row kernel's rule); nothing is held across the row, so any K works in one pass.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "qengine/quantize_act.h"
#include "row_quant.cuh"
#include "torch_gelu.cuh"

namespace qengine {
namespace {

using namespace rowq;

template <typename T, typename S, int kU>
__global__ void __launch_bounds__(1024)
gelu_absmax_kernel(const T* __restrict__ x, int64_t ldx, const T* __restrict__ g, int64_t ldg,
                   const S* __restrict__ smooth, T* __restrict__ gout, float* __restrict__ amax_out, int64_t M,
                   int nvec_plain, int nvec) {
  using V = Vec<T>;
  constexpr int kN = V::kN;
  constexpr bool kSmooth = !std::is_void_v<S>;
  using AM = AbsMax<T>;
  __shared__ float warp_max[32];
  const int G = blockDim.x, t = threadIdx.x;
  const int nvec_gelu = nvec - nvec_plain;
  for (int64_t row = blockIdx.x; row < M; row += gridDim.x) {
    const V* xr = reinterpret_cast<const V*>(x + row * ldx);
    const V* gr = reinterpret_cast<const V*>(g + row * ldg);
    V* orow = reinterpret_cast<V*>(gout + row * static_cast<int64_t>(nvec_gelu) * kN);
    typename AM::Acc acc = AM::zero();
    float amax = 0.f;
    for (int base = t; base < nvec; base += G * kU) {
      V r[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int vi = base + u * G;
        if (vi < nvec) r[u] = vi < nvec_plain ? xr[vi] : gr[vi - nvec_plain];
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int vi = base + u * G;
        if (vi >= nvec) continue;
        if (vi >= nvec_plain) {
          gelu_in_place(r[u]);
          orow[vi - nvec_plain] = r[u];
        }
        if constexpr (kSmooth) {
#pragma unroll
          for (int j = 0; j < kN; ++j) amax = fmaxf(amax, fabsf(smoothed<T, S>(r[u].v[j], smooth, int64_t(vi) * kN + j)));
        } else {
          acc = AM::add(acc, r[u]);
        }
      }
    }
    if constexpr (!kSmooth) amax = AM::finish(acc);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    if (G > 32) {
      __syncthreads();  // a previous row's readers are done with warp_max
      if (t % 32 == 0) warp_max[t / 32] = amax;
      __syncthreads();
      for (int w = 0; w < G / 32; ++w) amax = fmaxf(amax, warp_max[w]);
    }
    if (t == 0) amax_out[row] = amax;
  }
}

template <typename T, typename S>
cudaError_t launch(const GeluAbsmaxParams& p, cudaStream_t stream) {
  constexpr int kN = Vec<T>::kN;
  const int nvec = static_cast<int>((p.K_plain + p.K_gelu) / kN);
  // 8 vectors per thread where the rows fill the GPU twice over with resident threads, else 4:
  // more threads per row for few rows (quantize_act.cu's choose_config, simplified).
  const int64_t slots = static_cast<int64_t>(p.sm_count > 0 ? p.sm_count : 132) * 2048;
  const bool wide = p.M * nvec >= 2 * slots;
  const int per_thread = wide ? 8 : 4;
  int threads = (nvec + per_thread - 1) / per_thread;
  threads = threads < 32 ? 32 : (threads > 1024 ? 1024 : (threads + 31) / 32 * 32);
  const unsigned blocks = static_cast<unsigned>(p.M < INT_MAX ? p.M : INT_MAX);
  auto run = [&](auto kernel) {
    kernel<<<blocks, threads, 0, stream>>>(static_cast<const T*>(p.x), p.ldx, static_cast<const T*>(p.gelu_x),
                                           p.ld_gelu, static_cast<const S*>(p.smooth), static_cast<T*>(p.gelu_out),
                                           p.amax, p.M, static_cast<int>(p.K_plain / kN), nvec);
    return cudaGetLastError();
  };
  return wide ? run(gelu_absmax_kernel<T, S, 8>) : run(gelu_absmax_kernel<T, S, 4>);
}

template <typename T>
cudaError_t dispatch_smooth(const GeluAbsmaxParams& p, cudaStream_t stream) {
  if (p.smooth == nullptr) return launch<T, void>(p, stream);
  if (p.smooth_type == p.x_type) return launch<T, T>(p, stream);
  if (p.smooth_type == FloatType::kFP32) return launch<T, float>(p, stream);
  return cudaErrorInvalidValue;
}

bool aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

bool valid(const GeluAbsmaxParams& p) {
  if (p.x_type != FloatType::kBF16 && p.x_type != FloatType::kFP16) return false;
  const int64_t kN = 8;  // 16-bit elements per 16-byte vector
  return p.M >= 0 && p.K_gelu > 0 && p.K_gelu % kN == 0 && p.K_plain >= 0 && p.K_plain % kN == 0 &&
         (p.K_plain + p.K_gelu) / kN <= INT_MAX && p.gelu_x != nullptr && aligned16(p.gelu_x) &&
         p.ld_gelu >= p.K_gelu && p.ld_gelu % kN == 0 && (p.K_plain == 0 || (p.x != nullptr && aligned16(p.x) &&
                                                                             p.ldx >= p.K_plain && p.ldx % kN == 0)) &&
         p.gelu_out != nullptr && aligned16(p.gelu_out) && p.amax != nullptr;
}

}  // namespace

cudaError_t gelu_absmax(const GeluAbsmaxParams& p, cudaStream_t stream) {
  if (!valid(p)) return cudaErrorInvalidValue;
  if (p.M == 0) return cudaSuccess;
  return p.x_type == FloatType::kBF16 ? dispatch_smooth<__nv_bfloat16>(p, stream) : dispatch_smooth<__half>(p, stream);
}

}  // namespace qengine
