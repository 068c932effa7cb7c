// Per-token dynamic activation quantization: see qengine/quantize_act.h for the contract.
//
// Speed comes from three things (notes/kernels.md has the measurements):
//  1. every 16-byte load of a row is issued before any of them is used, and a row is spread over
//     enough threads (a whole block for K > 512) that many rows are in flight per SM;
//  2. the division by the row scale costs 3 full-rate FP32 instructions instead of ~10 plus a
//     quarter-rate MUFU.RCP (exact_div below: Markstein's correction step, exact);
//  3. INT8 rounding is one FADD (the 1.5 * 2^23 trick) instead of a quarter-rate F2I, and the
//     clamps the spec asks for are provably inactive on that path (see quantize_vec).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <climits>
#include <type_traits>
#include <cstdint>

#include "qengine/quantize_act.h"

namespace qengine {
namespace {

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

template <typename T> __device__ __forceinline__ float to_float(T v);
template <> __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <> __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float(float v) { return v; }

// Row absmax of unsmoothed input. 16-bit types take the max on packed pairs (one LOP3 for |.| and
// one HMNMX2 per two elements) and convert once at the end: the conversion to fp32 is exact and
// monotonic, so the result is the fp32 absmax of the spec. fmaxf / HMNMX2 both ignore a NaN operand.
template <typename T> struct AbsMax {
  using Acc = float;
  static __device__ __forceinline__ Acc zero() { return 0.f; }
  static __device__ __forceinline__ Acc add(Acc a, const Vec<T>& v) {
#pragma unroll
    for (int j = 0; j < Vec<T>::kN; ++j) a = fmaxf(a, fabsf(to_float(v.v[j])));
    return a;
  }
  static __device__ __forceinline__ float finish(Acc a) { return a; }
};
template <typename T2> struct AbsMax16 {
  using Acc = T2;
  static __device__ __forceinline__ Acc add_words(Acc a, const uint4& w) {
    const uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t m = ws[i] & 0x7fff7fffu;  // |.| of both halves: clear the sign bits
      a = __hmax2(a, *reinterpret_cast<const T2*>(&m));
    }
    return a;
  }
};
template <> struct AbsMax<__nv_bfloat16> : AbsMax16<__nv_bfloat162> {
  static __device__ __forceinline__ Acc zero() { return __float2bfloat162_rn(0.f); }
  static __device__ __forceinline__ Acc add(Acc a, const Vec<__nv_bfloat16>& v) {
    return add_words(a, *reinterpret_cast<const uint4*>(&v));
  }
  static __device__ __forceinline__ float finish(Acc a) { return fmaxf(__low2float(a), __high2float(a)); }
};
template <> struct AbsMax<__half> : AbsMax16<__half2> {
  static __device__ __forceinline__ Acc zero() { return __float2half2_rn(0.f); }
  static __device__ __forceinline__ Acc add(Acc a, const Vec<__half>& v) {
    return add_words(a, *reinterpret_cast<const uint4*>(&v));
  }
  static __device__ __forceinline__ float finish(Acc a) { return fmaxf(__low2float(a), __high2float(a)); }
};

// Exactly rounded x / scale from inv = RN(1 / scale) (IEEE __frcp_rn): q0 = RN(x * inv) is within
// one ulp of x / scale, r = x - scale * q0 is exact (FMA), and RN(q0 + r * inv) is the correctly
// rounded quotient (Markstein's theorem; Muller et al., Handbook of Floating-Point Arithmetic,
// "Newton-Raphson-based division with an FMA"). The theorem needs no underflow: the caller uses this
// only for 2^-64 <= scale <= 2^64, where every quotient of magnitude >= 2^-12 is computed without
// underflow, and smaller quotients quantize to (signed) zero whatever their low bits.
// Checked on the CPU against IEEE division: all bf16 and fp16 x for 6000 scales, 1.1e9 random fp32
// x (half of them within 3 ulps of (n + 0.5) * scale), 0 mismatches in the quantized result.
struct ExactDiv {
  float scale, inv;
  __device__ __forceinline__ float operator()(float x) const {
    const float q0 = __fmul_rn(x, inv);
    const float r = __fmaf_rn(-q0, scale, x);
    return __fmaf_rn(r, inv, q0);
  }
};

// Smoothed input: x / smooth[k] with IEEE division (S = void: no smoothing).
template <typename T, typename S>
__device__ __forceinline__ float smoothed(T x, const S* smooth, int64_t k) {
  if constexpr (std::is_void_v<S>) {
    return to_float(x);
  } else {
    return __fdiv_rn(to_float(x), to_float(smooth[k]));
  }
}

// Quantizes one vector (elements k0 .. k0 + kN - 1 of the row) to kN bytes.
// kFast (2^-64 <= scale <= 2^64): exact division by ExactDiv; no clamps, because they cannot bite:
// scale = RN(absmax / QMAX) >= (absmax / QMAX)(1 - 2^-24) for a normal scale, so |x / scale| <=
// QMAX (1 + 2^-23) and RN of it rounds to at most QMAX (INT8: < 127.5; FP8: the satfinite
// conversion maps anything above 448 to 448, as clamp-then-round does).
//   INT8: RN(q + 1.5 * 2^23) is 1.5 * 2^23 + rint_half_even(q) for |q| < 2^22, so its low byte is
//         the two's-complement result.
//   FP8 : one RNE conversion of the pair; copysign keeps the sign of zero quotients (the FMAs can
//         turn -0 into +0, and the e4m3 byte of -0 is 0x80).
// !kFast (subnormal, tiny or huge scales): IEEE __fdiv_rn, clamp, convert, as the spec reads.
template <bool kFast, QuantType Q, typename T, typename S>
__device__ __forceinline__ typename OutBytes<Vec<T>::kN>::type quantize_vec(const Vec<T>& t, const S* smooth, int64_t k0,
                                                                             ExactDiv div) {
  constexpr int kN = Vec<T>::kN;
  float f[kN];
#pragma unroll
  for (int j = 0; j < kN; ++j) f[j] = smoothed<T, S>(t.v[j], smooth, k0 + j);
  uint32_t w[kN / 4];
  if constexpr (Q == QuantType::kInt8) {
    uint32_t b[kN];
#pragma unroll
    for (int j = 0; j < kN; ++j) {
      if constexpr (kFast) {
        b[j] = __float_as_uint(__fadd_rn(div(f[j]), 12582912.f));
      } else {
        b[j] = static_cast<uint32_t>(max(-127, min(127, __float2int_rn(__fdiv_rn(f[j], div.scale)))));
      }
    }
#pragma unroll
    for (int i = 0; i < kN / 4; ++i)
      w[i] = __byte_perm(__byte_perm(b[4 * i], b[4 * i + 1], 0x0040), __byte_perm(b[4 * i + 2], b[4 * i + 3], 0x0040),
                         0x5410);
  } else {
    uint32_t h[kN / 2];
#pragma unroll
    for (int j = 0; j < kN; j += 2) {
      float2 v;
      if constexpr (kFast) {
        v = make_float2(copysignf(div(f[j]), f[j]), copysignf(div(f[j + 1]), f[j + 1]));
      } else {
        v = make_float2(fminf(fmaxf(__fdiv_rn(f[j], div.scale), -448.f), 448.f),
                        fminf(fmaxf(__fdiv_rn(f[j + 1], div.scale), -448.f), 448.f));
      }
      h[j / 2] = static_cast<uint32_t>(__nv_cvt_float2_to_fp8x2(v, __NV_SATFINITE, __NV_E4M3));
    }
#pragma unroll
    for (int i = 0; i < kN / 4; ++i) w[i] = h[2 * i] | (h[2 * i + 1] << 16);
  }
  return *reinterpret_cast<const typename OutBytes<kN>::type*>(w);
}

// Hides a vector's value from the optimizer, so the second pass re-converts the packed 16-bit
// values instead of keeping all converted floats alive across the row reduction.
template <typename V>
__device__ __forceinline__ void launder(V& v) {
  uint32_t* w = reinterpret_cast<uint32_t*>(&v);
#pragma unroll
  for (int i = 0; i < static_cast<int>(sizeof(V) / 4); ++i) asm volatile("" : "+r"(w[i]));
}

// Grid-stride over rows. kWarpRows: a warp per row, blockDim.x / 32 rows per block (short rows);
// else a block per row (blockDim.x threads, a multiple of 32). Thread t of a row owns vectors
// t, t + G, ..., t + (kVecs - 1) G in registers; rows longer than kVecs * G vectors re-read the
// rest from L2 in the second pass.
template <typename T, typename S, QuantType Q, int kVecs, bool kWarpRows>
__global__ void __launch_bounds__(1024)
quantize_rows_kernel(const T* __restrict__ x, int64_t ldx, const S* __restrict__ smooth, uint8_t* __restrict__ q,
                     float* __restrict__ scale_out, int64_t M, int64_t K) {
  using V = Vec<T>;
  constexpr int kN = V::kN;
  using OB = typename OutBytes<kN>::type;
  constexpr bool kSmooth = !std::is_void_v<S>;
  using AM = AbsMax<T>;
  const int G = kWarpRows ? 32 : blockDim.x;
  const int t = kWarpRows ? threadIdx.x % 32 : threadIdx.x;
  const int rows_per_block = kWarpRows ? blockDim.x / 32 : 1;
  const int nvec = static_cast<int>(K / kN);
  __shared__ float warp_max[32];

  for (int64_t row = static_cast<int64_t>(blockIdx.x) * rows_per_block + (kWarpRows ? threadIdx.x / 32 : 0); row < M;
       row += static_cast<int64_t>(gridDim.x) * rows_per_block) {
    const V* xr = reinterpret_cast<const V*>(x + row * ldx);
    // All loads first: kVecs independent 16-byte requests per thread in flight at once.
    V regs[kVecs];
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      const int vi = t + i * G;
      if (vi < nvec) regs[i] = xr[vi];
    }
    float amax;
    if constexpr (kSmooth) {
      amax = 0.f;
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int vi = t + i * G;
        if (vi < nvec) {
#pragma unroll
          for (int j = 0; j < kN; ++j) amax = fmaxf(amax, fabsf(smoothed<T, S>(regs[i].v[j], smooth, int64_t(vi) * kN + j)));
        }
      }
      for (int vi = t + kVecs * G; vi < nvec; vi += G) {
        const V r = xr[vi];
#pragma unroll
        for (int j = 0; j < kN; ++j) amax = fmaxf(amax, fabsf(smoothed<T, S>(r.v[j], smooth, int64_t(vi) * kN + j)));
      }
    } else {
      typename AM::Acc acc = AM::zero();
#pragma unroll
      for (int i = 0; i < kVecs; ++i)
        if (t + i * G < nvec) acc = AM::add(acc, regs[i]);
      for (int vi = t + kVecs * G; vi < nvec; vi += G) acc = AM::add(acc, xr[vi]);
      amax = AM::finish(acc);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    if (!kWarpRows && G > 32) {
      __syncthreads();  // a previous row's readers are done with warp_max
      if (t % 32 == 0) warp_max[t / 32] = amax;
      __syncthreads();
      for (int w = 0; w < G / 32; ++w) amax = fmaxf(amax, warp_max[w]);
    }

#pragma unroll
    for (int i = 0; i < kVecs; ++i) launder(regs[i]);
    const float scale = amax > 0.f ? __fdiv_rn(amax, Q == QuantType::kInt8 ? 127.f : 448.f) : 1.f;
    if (t == 0) scale_out[row] = scale;
    const ExactDiv div{scale, __frcp_rn(scale)};

    OB* qr = reinterpret_cast<OB*>(q + row * K);
    auto emit_row = [&](auto fast) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        const int vi = t + i * G;
        if (vi < nvec) qr[vi] = quantize_vec<decltype(fast)::value, Q>(regs[i], smooth, int64_t(vi) * kN, div);
      }
      for (int vi = t + kVecs * G; vi < nvec; vi += G)
        qr[vi] = quantize_vec<decltype(fast)::value, Q>(xr[vi], smooth, int64_t(vi) * kN, div);
    };
    // Uniform per row; false only for rows of absmax < ~2^-57 or > ~2^71 (and inf/NaN).
    if (scale >= 0x1p-64f && scale <= 0x1p64f) {
      emit_row(std::true_type{});
    } else {
      emit_row(std::false_type{});
    }
  }
}

// Launch shape: kVecs vectors per thread, `threads` threads per row (a multiple of 32; 32 with
// warp_rows, which packs 4 rows per block).
struct Config {
  int vecs;
  int threads;
  bool warp_rows;
};

template <typename T, typename S, QuantType Q, int kVecs, bool kWarpRows>
cudaError_t launch(const QuantizeActParams& p, int threads, cudaStream_t stream) {
  const int block = kWarpRows ? 128 : threads;
  const int64_t rows_per_block = kWarpRows ? 4 : 1;
  const int64_t needed = (p.M + rows_per_block - 1) / rows_per_block;
  // One row (group) per block: blocks are short, so a non-persistent grid balances the tail;
  // the grid-stride loop in the kernel only matters beyond 2^31 - 1 blocks.
  const unsigned blocks = static_cast<unsigned>(needed < INT_MAX ? needed : INT_MAX);
  quantize_rows_kernel<T, S, Q, kVecs, kWarpRows><<<blocks, block, 0, stream>>>(
      static_cast<const T*>(p.x), p.ldx, static_cast<const S*>(p.smooth), static_cast<uint8_t*>(p.q), p.scale, p.M, p.K);
  return cudaGetLastError();
}

template <typename T, typename S, QuantType Q>
cudaError_t launch_config(const QuantizeActParams& p, Config c, cudaStream_t stream) {
  if (c.warp_rows) return launch<T, S, Q, 2, true>(p, 32, stream);
  switch (c.vecs) {
    case 1: return launch<T, S, Q, 1, false>(p, c.threads, stream);
    case 2: return launch<T, S, Q, 2, false>(p, c.threads, stream);
    case 4: return launch<T, S, Q, 4, false>(p, c.threads, stream);
    case 8: return launch<T, S, Q, 8, false>(p, c.threads, stream);
  }
  return cudaErrorInvalidValue;
}

int round_up32(int64_t n) { return static_cast<int>((n + 31) / 32 * 32); }

// Launch shape, from a sweep of every shape on an H200 (benchmarks/quantize_act_micro.cu,
// notes/kernels.md): rows of <= 64 vectors (K <= 512 for 16-bit input) get a warp each. Longer
// rows get a block. Problems of at least two GPU-fulls of resident threads (M * nvec >= 2 * 2048
// * SMs vectors) take 8 vectors per thread: the most bytes in flight per thread and the fewest
// threads per row (blocks of <= 256 threads for K <= 16384); 4 per thread lost up to 16% there
// (K = 15360), blocks of 384+ threads lost more. Smaller problems are latency-bound: the fewest
// vectors per thread that keep the block at <= 128 threads.
Config choose_config(int64_t M, int64_t nvec, int sm_count) {
  if (nvec <= 64) return {2, 32, true};
  const int64_t slots = static_cast<int64_t>(sm_count > 0 ? sm_count : 132) * 2048;  // resident threads
  int vecs = 8;
  if (M * nvec < 2 * slots)
    for (vecs = 1; vecs < 8 && nvec > static_cast<int64_t>(vecs) * 128; vecs *= 2) {
    }
  const int64_t per_thread = (nvec + vecs - 1) / vecs;
  return {vecs, round_up32(per_thread < 1024 ? per_thread : 1024), false};
}

template <typename T, typename S, QuantType Q>
cudaError_t dispatch_shape(const QuantizeActParams& p, cudaStream_t stream) {
  return launch_config<T, S, Q>(p, choose_config(p.M, p.K / Vec<T>::kN, p.sm_count), stream);
}

template <typename T, QuantType Q>
cudaError_t dispatch_smooth(const QuantizeActParams& p, cudaStream_t stream) {
  if (p.smooth == nullptr) return dispatch_shape<T, void, Q>(p, stream);
  if (p.smooth_type == p.x_type) return dispatch_shape<T, T, Q>(p, stream);
  if constexpr (!std::is_same_v<T, float>) {
    if (p.smooth_type == FloatType::kFP32) return dispatch_shape<T, float, Q>(p, stream);
  }
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

bool valid(const QuantizeActParams& p) {
  const int64_t elem = p.x_type == FloatType::kFP32 ? 4 : 2;
  return p.M >= 0 && p.K > 0 && p.K % 16 == 0 && p.K / (16 / elem) <= INT_MAX && p.ldx >= p.K && (p.ldx * elem) % 16 == 0 &&
         reinterpret_cast<uintptr_t>(p.x) % 16 == 0 && reinterpret_cast<uintptr_t>(p.q) % 16 == 0;
}

}  // namespace

cudaError_t quantize_act(const QuantizeActParams& p, cudaStream_t stream) {
  if (!valid(p)) return cudaErrorInvalidValue;
  if (p.M == 0) return cudaSuccess;
  return p.q_type == QuantType::kInt8 ? dispatch_input<QuantType::kInt8>(p, stream)
                                      : dispatch_input<QuantType::kFP8E4M3>(p, stream);
}

}  // namespace qengine
