// Per-head RMSNorm + rotary embedding of attention queries/keys (qengine/norms.h has the math).
// One warp per (batch, token, head) row of D elements; each lane holds D/32 consecutive elements,
// so the interleaved (2i, 2i+1) rotary pairs never cross lanes. One read and one write of q/k,
// where diffusers' eager path (rms_norm, unbind, stack, two casts to fp32, two muls, add, cast,
// and the torch.cat with the text tokens) makes about ten passes.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "qengine/norms.h"

namespace qengine {
namespace {

template <typename T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }

// E 16-bit elements as one aligned vector access (E = 2, 4, 8 -> 4, 8, 16 bytes).
template <int E> struct Vec;
template <> struct Vec<2> { using type = uint32_t; };
template <> struct Vec<4> { using type = uint2; };
template <> struct Vec<8> { using type = uint4; };

template <typename T, int D>
__global__ void __launch_bounds__(256) rmsnorm_rope_kernel(RmsNormRopeParams p) {
  constexpr int E = D / 32;
  using V = typename Vec<E>::type;
  const int64_t S_tot = p.S_prefix + p.S;
  const int64_t rows = p.B * S_tot * p.H;
  const int lane = threadIdx.x & 31;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  if (row >= rows) return;
  const int h = static_cast<int>(row % p.H);
  const int64_t s_all = (row / p.H) % S_tot;
  const int64_t b = row / (p.H * S_tot);

  const bool from_prefix = s_all < p.S_prefix;
  const T* src = from_prefix
      ? static_cast<const T*>(p.prefix) + b * p.p_sb + s_all * p.p_ss
      : static_cast<const T*>(p.x) + b * p.x_sb + (s_all - p.S_prefix) * p.x_ss;
  const T* w = static_cast<const T*>(from_prefix ? p.prefix_w : p.w);
  const int d0 = lane * E;

  union { V v; T e[E]; } in, wt, out;
  in.v = *reinterpret_cast<const V*>(src + static_cast<int64_t>(h) * D + d0);
  wt.v = *reinterpret_cast<const V*>(w + d0);

  float v[E], ss = 0.f;
#pragma unroll
  for (int i = 0; i < E; ++i) {
    v[i] = to_f(in.e[i]);
    ss += v[i] * v[i];
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
  const float rstd = rsqrtf(ss / D + p.eps);

  float n[E];
#pragma unroll
  for (int i = 0; i < E; ++i) n[i] = to_f(from_f<T>(__fmul_rn(to_f(wt.e[i]), __fmul_rn(rstd, v[i]))));

  if (p.cos != nullptr) {
    const float* c = p.cos + s_all * D + d0;
    const float* sn = p.sin + s_all * D + d0;
#pragma unroll
    for (int i = 0; i < E; i += 2) {
      // x_rotated = (-x[2i+1], x[2i]); out = x * cos + x_rotated * sin, each product rounded to
      // fp32 and then summed, as the eager fp32 expression does.
      out.e[i] = from_f<T>(__fadd_rn(__fmul_rn(n[i], c[i]), __fmul_rn(-n[i + 1], sn[i])));
      out.e[i + 1] = from_f<T>(__fadd_rn(__fmul_rn(n[i + 1], c[i + 1]), __fmul_rn(n[i], sn[i + 1])));
    }
  } else {
#pragma unroll
    for (int i = 0; i < E; ++i) out.e[i] = from_f<T>(n[i]);
  }
  T* dst = static_cast<T*>(p.out) + row * D + d0;  // out is [B, S_tot, H, D] contiguous: row-major rows
  *reinterpret_cast<V*>(dst) = out.v;
}

template <typename T>
cudaError_t launch(const RmsNormRopeParams& p, cudaStream_t stream) {
  const int64_t rows = p.B * (p.S_prefix + p.S) * p.H;
  const int64_t blocks = (rows * 32 + 255) / 256;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  switch (p.D) {
    case 64: rmsnorm_rope_kernel<T, 64><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p); break;
    case 128: rmsnorm_rope_kernel<T, 128><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p); break;
    case 256: rmsnorm_rope_kernel<T, 256><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t rmsnorm_rope(const RmsNormRopeParams& p, cudaStream_t stream) {
  if (p.B <= 0 || p.S < 0 || p.S_prefix < 0 || p.H <= 0 || (p.S_prefix > 0 && !p.prefix)) return cudaErrorInvalidValue;
  if (p.B * (p.S + p.S_prefix) == 0) return cudaSuccess;
  switch (p.x_type) {
    case FloatType::kBF16: return launch<__nv_bfloat16>(p, stream);
    case FloatType::kFP16: return launch<__half>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace qengine
