// Per-head RMSNorm + rotary embedding of attention queries/keys (qengine/norms.h has the math).
// One warp per (batch, token, head) row of D elements (a warp takes up to 4 heads of a token in
// turn); each lane holds D/32 consecutive elements,
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

// A warp handles R consecutive heads of one token (R divides H): all R rows' loads are issued
// before any is used (R x more bytes in flight per lane than one row at a time, which left the
// kernel at ~55% of copy bandwidth on an H100), and the token's cos/sin are read once for them.
template <typename T, int D, int R>
__global__ void __launch_bounds__(256) rmsnorm_rope_kernel(RmsNormRopeParams p) {
  constexpr int E = D / 32;
  using V = typename Vec<E>::type;
  const int64_t S_tot = p.S_prefix + p.S;
  const int64_t rows = p.B * S_tot * p.H;
  const int lane = threadIdx.x & 31;
  const int64_t row0 = ((static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5) * R;
  if (row0 >= rows) return;
  const int h0 = static_cast<int>(row0 % p.H);
  const int64_t s_all = (row0 / p.H) % S_tot;
  const int64_t b = row0 / (p.H * S_tot);

  const bool from_prefix = s_all < p.S_prefix;
  const T* src = from_prefix
      ? static_cast<const T*>(p.prefix) + b * p.p_sb + s_all * p.p_ss
      : static_cast<const T*>(p.x) + b * p.x_sb + (s_all - p.S_prefix) * p.x_ss;
  const T* w = static_cast<const T*>(from_prefix ? p.prefix_w : p.w);
  const int d0 = lane * E;

  union U { V v; T e[E]; };
  U in[R], wt;
#pragma unroll
  for (int r = 0; r < R; ++r) in[r].v = *reinterpret_cast<const V*>(src + static_cast<int64_t>(h0 + r) * D + d0);
  wt.v = *reinterpret_cast<const V*>(w + d0);
  float c[E], sn[E];
  if (p.cos != nullptr) {
#pragma unroll
    for (int i = 0; i < E; ++i) {
      c[i] = p.cos[s_all * D + d0 + i];
      sn[i] = p.sin[s_all * D + d0 + i];
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    float v[E], ss = 0.f;
#pragma unroll
    for (int i = 0; i < E; ++i) {
      v[i] = to_f(in[r].e[i]);
      ss += v[i] * v[i];
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, off);
    const float rstd = rsqrtf(ss / D + p.eps);

    float n[E];
#pragma unroll
    for (int i = 0; i < E; ++i) n[i] = to_f(from_f<T>(__fmul_rn(to_f(wt.e[i]), __fmul_rn(rstd, v[i]))));

    U out;
    if (p.cos != nullptr) {
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
    // out is [B, S_tot, H, D] contiguous: row-major rows
    *reinterpret_cast<V*>(static_cast<T*>(p.out) + (row0 + r) * D + d0) = out.v;
  }
}

template <typename T, int D>
cudaError_t launch_d(const RmsNormRopeParams& p, cudaStream_t stream) {
  const int64_t rows = p.B * (p.S_prefix + p.S) * p.H;
  const int R = p.H % 4 == 0 ? 4 : p.H % 2 == 0 ? 2 : 1;
  const int64_t blocks = (rows / R * 32 + 255) / 256;
  if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(blocks);
  switch (R) {
    case 4: rmsnorm_rope_kernel<T, D, 4><<<grid, 256, 0, stream>>>(p); break;
    case 2: rmsnorm_rope_kernel<T, D, 2><<<grid, 256, 0, stream>>>(p); break;
    default: rmsnorm_rope_kernel<T, D, 1><<<grid, 256, 0, stream>>>(p); break;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch(const RmsNormRopeParams& p, cudaStream_t stream) {
  switch (p.D) {
    case 64: return launch_d<T, 64>(p, stream);
    case 128: return launch_d<T, 128>(p, stream);
    case 256: return launch_d<T, 256>(p, stream);
    default: return cudaErrorInvalidValue;
  }
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
