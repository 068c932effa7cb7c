// 8 signed INT4 values -> INT8 as 16 x w, in 5 integer ops (no CUTLASS; shared by the wgmma
// mainloop's converter, widen_int4_times16.cuh, and the mma.sync split-K kernel).
//
// A nibble moved to the high half of its byte *is* the int8 value 16 x w (two's complement,
// -128..112): no sign extension needed.
//   odd  = x & 0xF0F0F0F0          bytes 16 x (w1, w3, w5, w7)
//   even = (x << 4) & 0xF0F0F0F0   bytes 16 x (w0, w2, w4, w6)
// and two byte permutes put them back in order. The int32 accumulator then holds exactly 16x the
// dot product; the epilogue multiplies w_scale * acc by 1/16 (exact in fp32: a power of two), so
// the output is bit-identical to widening to w. The accumulator's bound becomes K x 128 x 128 <
// 2^31, i.e. K <= 65536 (kW4A8MaxK in w4a8_gemm.h, checked by the binding).
#pragma once

#include <cstdint>

namespace qengine::w4a8::sm90 {

// 8 signed nibbles (nibble i = w_i) -> 16 x w_0..3 in `first`, 16 x w_4..7 in `second`.
__device__ __forceinline__ void widen_8_times16(uint32_t x, uint32_t& first, uint32_t& second) {
  const uint32_t even = (x << 4) & 0xF0F0F0F0u;  // 16 w0, 16 w2, 16 w4, 16 w6
  const uint32_t odd = x & 0xF0F0F0F0u;          // 16 w1, 16 w3, 16 w5, 16 w7
  first = __byte_perm(even, odd, 0x5140);
  second = __byte_perm(even, odd, 0x7362);
}

}  // namespace qengine::w4a8::sm90
