// Per-token quantization of one 16-byte vector, shared by the row kernels (quantize_act.cu,
// layer_norm_quant.cu): the exact division by the row scale and the INT8 / FP8 E4M3 rounding of
// qengine/quantize_act.h's contract. Inline device code and templates only (namespace rowq), so
// each kernel source that includes it compiles its own copy.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "qengine/types.h"

namespace qengine {
namespace rowq {

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
  // The scales this division is exact for (the range above); others take the IEEE __fdiv_rn path.
  static __device__ __forceinline__ bool exact_for(float scale) { return scale >= 0x1p-64f && scale <= 0x1p64f; }
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


template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ float from_float(float v) { return v; }

}  // namespace rowq
}  // namespace qengine
