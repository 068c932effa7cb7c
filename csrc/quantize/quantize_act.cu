// Per-token dynamic activation quantization: see qengine/quantize_act.h for the contract.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "qengine/quantize_act.h"

namespace qengine {
namespace {

template <typename T> struct Load;
template <> struct Load<__nv_bfloat16> { static __device__ float f(__nv_bfloat16 v) { return __bfloat162float(v); } };
template <> struct Load<__half> { static __device__ float f(__half v) { return __half2float(v); } };
template <> struct Load<float> { static __device__ float f(float v) { return v; } };

template <QuantType Q> struct QuantTraits;
template <> struct QuantTraits<QuantType::kInt8> {
  static constexpr float kQmax = 127.f;
  // Two quantized bytes (low byte first). cvt.rni rounds half to even, like torch.round.
  static __device__ __forceinline__ uint32_t quantize2(float a, float b, float scale) {
    const int qa = max(-127, min(127, __float2int_rn(__fdiv_rn(a, scale))));
    const int qb = max(-127, min(127, __float2int_rn(__fdiv_rn(b, scale))));
    return (static_cast<uint32_t>(qa) & 0xffu) | ((static_cast<uint32_t>(qb) & 0xffu) << 8);
  }
};
template <> struct QuantTraits<QuantType::kFP8E4M3> {
  static constexpr float kQmax = 448.f;
  // Clamp first (the spec's rule), then one round-to-nearest-even conversion of the pair.
  static __device__ __forceinline__ uint32_t quantize2(float a, float b, float scale) {
    const float2 v = make_float2(fminf(fmaxf(__fdiv_rn(a, scale), -448.f), 448.f),
                                 fminf(fmaxf(__fdiv_rn(b, scale), -448.f), 448.f));
    return static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(v, __NV_SATFINITE, __NV_E4M3));
  }
};

// A 16-byte vector of input elements.
template <typename T>
struct alignas(16) Vec {
  static constexpr int kN = 16 / sizeof(T);
  T v[kN];
};

// The quantized bytes of one input vector (kN bytes).
template <int N> struct OutBytes;
template <> struct OutBytes<8> { using type = uint2; };
template <> struct OutBytes<4> { using type = uint32_t; };

// Hides a vector's value from the optimizer, so the second pass re-converts the packed 16-bit
// values instead of keeping all converted floats alive across the row reduction (which would
// double the registers of bf16 rows and halve occupancy).
template <typename V>
__device__ __forceinline__ void launder(V& v) {
  uint32_t* w = reinterpret_cast<uint32_t*>(&v);
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(V) / 4); ++i) asm volatile("" : "+r"(w[i]));
}

template <typename T, typename S>
__device__ __forceinline__ float smoothed(T x, const S* smooth, int64_t k) {
  float f = Load<T>::f(x);
  if (smooth != nullptr) f = __fdiv_rn(f, Load<S>::f(smooth[k]));
  return f;
}

// kThreads threads per row (a warp, or a whole block when > 32), kRowsPerBlock rows per block
// at a time, kVecs 16-byte vectors per thread kept in registers between the two passes. The grid
// is sized to what stays resident on the GPU and strides over the rows.
template <typename T, typename S, QuantType Q, int kThreads, int kRowsPerBlock, int kVecs>
__global__ void __launch_bounds__(kThreads * kRowsPerBlock)
quantize_rows_kernel(const T* __restrict__ x, int64_t ldx, const S* __restrict__ smooth,
                     uint8_t* __restrict__ q, float* __restrict__ scale_out, int64_t M, int64_t K) {
  static_assert(kThreads == 32 || kRowsPerBlock == 1, "multi-warp rows use one row per block");
  using V = Vec<T>;
  constexpr int kN = V::kN;
  using OB = typename OutBytes<kN>::type;
  const int lane = threadIdx.x % kThreads;
  const int group = threadIdx.x / kThreads;
  const int64_t nvec = K / kN;

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + group; row < M;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const V* xr = reinterpret_cast<const V*>(x + row * ldx);
    V regs[kVecs];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int64_t vi = lane + static_cast<int64_t>(i) * kThreads;
      if (vi < nvec) regs[i] = xr[vi];
    }
    float amax = 0.f;
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int64_t vi = lane + static_cast<int64_t>(i) * kThreads;
      if (vi < nvec) {
#pragma unroll
        for (int j = 0; j < kN; ++j) amax = fmaxf(amax, fabsf(smoothed(regs[i].v[j], smooth, vi * kN + j)));
      }
    }
    // Tail beyond the register capacity: read once here, once more below (from L2).
    for (int64_t vi = lane + static_cast<int64_t>(kVecs) * kThreads; vi < nvec; vi += kThreads) {
      V t = xr[vi];
#pragma unroll
      for (int j = 0; j < kN; ++j) amax = fmaxf(amax, fabsf(smoothed(t.v[j], smooth, vi * kN + j)));
    }

#pragma unroll
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    if constexpr (kThreads > 32) {
      constexpr int kWarps = kThreads / 32;
      __shared__ float warp_max[kWarps];
      __syncthreads();  // the previous row's readers are done with warp_max
      if (lane % 32 == 0) warp_max[lane / 32] = amax;
      __syncthreads();
#pragma unroll
      for (int w = 0; w < kWarps; ++w) amax = fmaxf(amax, warp_max[w]);
    }

#pragma unroll
    for (int i = 0; i < kVecs; ++i) launder(regs[i]);
    const float scale = amax > 0.f ? __fdiv_rn(amax, QuantTraits<Q>::kQmax) : 1.f;
    if (lane == 0) scale_out[row] = scale;

    OB* qr = reinterpret_cast<OB*>(q + row * K);
    auto emit = [&](const V& t, int64_t vi) {
      uint32_t w[(kN + 3) / 4] = {};
#pragma unroll
      for (int j = 0; j < kN; j += 2) {
        const uint32_t two = QuantTraits<Q>::quantize2(smoothed(t.v[j], smooth, vi * kN + j),
                                                        smoothed(t.v[j + 1], smooth, vi * kN + j + 1), scale);
        w[j / 4] |= two << (8 * (j % 4));
      }
      qr[vi] = *reinterpret_cast<const OB*>(w);
    };
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int64_t vi = lane + static_cast<int64_t>(i) * kThreads;
      if (vi < nvec) emit(regs[i], vi);
    }
    for (int64_t vi = lane + static_cast<int64_t>(kVecs) * kThreads; vi < nvec; vi += kThreads) emit(xr[vi], vi);
  }
}

template <typename T, typename S, QuantType Q, int kThreads, int kRowsPerBlock, int kVecs>
cudaError_t launch_rows(const QuantizeActParams& p, cudaStream_t stream) {
  constexpr int kBlock = kThreads * kRowsPerBlock;
  auto kernel = quantize_rows_kernel<T, S, Q, kThreads, kRowsPerBlock, kVecs>;
  // Resident blocks per SM depend only on the kernel (registers, block size): ask once.
  static const int per_sm = [&] {
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kBlock, 0) != cudaSuccess || n < 1) n = 1;
    return n;
  }();
  const int64_t needed = (p.M + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t resident = static_cast<int64_t>(per_sm) * (p.sm_count > 0 ? p.sm_count : 1);
  const unsigned blocks = static_cast<unsigned>(needed < resident ? needed : resident);
  kernel<<<blocks, kBlock, 0, stream>>>(static_cast<const T*>(p.x), p.ldx, static_cast<const S*>(p.smooth),
                                        static_cast<uint8_t*>(p.q), p.scale, p.M, p.K);
  return cudaGetLastError();
}

// Thread-group size by row length (in 16-byte vectors): rows up to 384 vectors (K <= 3072 for
// 16-bit input) get a warp each, 4 rows per block; up to 1536 vectors (K <= 12288) 128 threads;
// longer rows 256 threads, with rows beyond 2048 vectors re-reading their tail.
template <typename T, typename S, QuantType Q>
cudaError_t dispatch_shape(const QuantizeActParams& p, cudaStream_t stream) {
  const int64_t nvec = p.K / Vec<T>::kN;
  if (nvec <= 32 * 4) return launch_rows<T, S, Q, 32, 4, 4>(p, stream);
  if (nvec <= 32 * 12) return launch_rows<T, S, Q, 32, 4, 12>(p, stream);
  if (nvec <= 128 * 12) return launch_rows<T, S, Q, 128, 1, 12>(p, stream);
  return launch_rows<T, S, Q, 256, 1, 8>(p, stream);
}

template <typename T, QuantType Q>
cudaError_t dispatch_smooth(const QuantizeActParams& p, cudaStream_t stream) {
  if (p.smooth == nullptr || p.smooth_type == p.x_type) return dispatch_shape<T, T, Q>(p, stream);
  if (p.smooth_type == FloatType::kFP32) return dispatch_shape<T, float, Q>(p, stream);
  return cudaErrorInvalidValue;
}

template <QuantType Q>
cudaError_t dispatch_input(const QuantizeActParams& p, cudaStream_t stream) {
  switch (p.x_type) {
    case FloatType::kBF16: return dispatch_smooth<__nv_bfloat16, Q>(p, stream);
    case FloatType::kFP16: return dispatch_smooth<__half, Q>(p, stream);
    case FloatType::kFP32: return dispatch_smooth<float, Q>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t quantize_act(const QuantizeActParams& p, cudaStream_t stream) {
  const int64_t elem = p.x_type == FloatType::kFP32 ? 4 : 2;
  if (p.M < 0 || p.K <= 0 || p.K % 16 || p.ldx < p.K || (p.ldx * elem) % 16 ||
      reinterpret_cast<uintptr_t>(p.x) % 16 || reinterpret_cast<uintptr_t>(p.q) % 16)
    return cudaErrorInvalidValue;
  if (p.M == 0) return cudaSuccess;
  return p.q_type == QuantType::kInt8 ? dispatch_input<QuantType::kInt8>(p, stream)
                                      : dispatch_input<QuantType::kFP8E4M3>(p, stream);
}

}  // namespace qengine
