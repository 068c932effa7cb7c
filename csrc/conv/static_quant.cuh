// Device helpers for quantizing with one per-tensor scale, shared by the conv's activation
// pre-pass (quantize_nhwc.cu) and the GroupNorm that writes a conv's 8-bit input directly
// (norms/group_norm_nhwc.cu): both must round exactly alike, so a fused producer gives the conv
// the bytes its own pre-pass would have written.
#pragma once

#include <cuda_fp8.h>

#include <cstdint>

#include "qengine/types.h"

namespace qengine {
namespace static_quant {

// x / scale rounded exactly like IEEE division, without a division per element: q0 = RN(x * inv)
// with inv = RN(1 / scale) is within an ulp, r = x - scale * q0 is exact (FMA), and RN(q0 + r * inv)
// is the correctly rounded quotient (Markstein; the same step and proof as csrc/quantize's
// ExactDiv, valid for 2^-64 <= scale <= 2^64, where quotients that could underflow quantize to
// zero anyway). A quotient that overflows (huge x over a small static scale) comes out inf/NaN and
// takes the IEEE division instead. The FMAs can turn -0 into +0: the sign is copied from x.
struct Quotient {
  float scale, inv;
  bool fast;
  static __device__ __forceinline__ Quotient of(float scale) {
    return {scale, __frcp_rn(scale), scale >= 0x1p-64f && scale <= 0x1p64f};
  }
  __device__ __forceinline__ float operator()(float x) const {
    if (!fast) return __fdiv_rn(x, scale);
    const float q0 = __fmul_rn(x, inv);
    const float q = __fmaf_rn(__fmaf_rn(-q0, scale, x), inv, q0);
    return isfinite(q) ? copysignf(q, x) : __fdiv_rn(x, scale);
  }
};

template <QuantType Q>
struct Traits;
template <>
struct Traits<QuantType::kInt8> {
  static constexpr float kQmax = 127.f;
  // clamp to [-127, 127], then round half to even by adding 1.5 * 2^23 (the low byte of the sum's
  // bits is the two's-complement result): rint(clamp(q)) == clamp(rint(q)) for these bounds.
  __device__ static uint8_t cvt(float q) {
    return static_cast<uint8_t>(__float_as_uint(__fadd_rn(fminf(fmaxf(q, -127.f), 127.f), 12582912.f)));
  }
};
template <>
struct Traits<QuantType::kFP8E4M3> {
  static constexpr float kQmax = 448.f;
  __device__ static uint8_t cvt(float q) {  // clamp to +-448, then round to nearest even
    return static_cast<uint8_t>(__nv_cvt_float_to_fp8(fminf(fmaxf(q, -448.f), 448.f), __NV_SATFINITE, __NV_E4M3));
  }
};

}  // namespace static_quant
}  // namespace qengine
