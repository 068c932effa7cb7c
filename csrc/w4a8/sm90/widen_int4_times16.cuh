// The 4 -> 8 bit widening of the W4A8 wgmma mainloop, as 16 x w instead of w.
//
// CUTLASS's NumericArrayConverter<int8_t, int4b_t, 8> sign-extends 8 nibbles with 13 integer
// ops (shift, masks, a PRMT per half to replicate sign bits, two PRMTs to interleave). The
// mixed-input mainloop runs it in the dependency chain between one wgmma and the next, for every
// 32-deep k-block. Here a nibble is moved to the high half of its byte instead: that byte *is*
// the int8 value 16 x w (two's complement, -128..112), no sign extension needed:
//   hi = x & 0xF0F0F0F0          bytes 16 x (w1, w3, w5, w7)
//   lo = (x << 4) & 0xF0F0F0F0   bytes 16 x (w0, w2, w4, w6)
// and two byte permutes put them back in order: 5 ops per 8 values.
//
// The int32 accumulator then holds exactly 16x the dot product, and the epilogue multiplies
// w_scale * acc by 1/16 (MultipliesSixteenth). Both steps are exact in fp32 (scaling by a power of
// two commutes with rounding), so the output is bit-identical to widening to w. The bound on the
// accumulator becomes K x 128 x 128 < 2^31, i.e. K <= 65536 (w4a8_gemm.h, checked by the binding).
//
// Hooked in through CUTLASS's LayoutAwareConvertImpl, which the mixed-input collective's
// dequantize_A_kblock calls for every register fragment: a partial specialization for
// int4b_t -> int8_t. Only the W4A8 sm90 translation units include this header (through
// w4a8_gemm_sm90.cuh), and every one of them sees it before the collective is instantiated.
#pragma once

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/array.h"
#include "cutlass/detail/collective/mixed_input_utils.hpp"
#include "cutlass/numeric_types.h"

namespace qengine::w4a8::sm90 {

// 8 signed nibbles (nibble i = w_i) -> 16 x w_0..3 in `first`, 16 x w_4..7 in `second`.
CUTLASS_DEVICE void widen_8_times16(uint32_t x, uint32_t& first, uint32_t& second) {
  const uint32_t even = (x << 4) & 0xF0F0F0F0u;  // 16 w0, 16 w2, 16 w4, 16 w6
  const uint32_t odd = x & 0xF0F0F0F0u;          // 16 w1, 16 w3, 16 w5, 16 w7
  first = __byte_perm(even, odd, 0x5140);
  second = __byte_perm(even, odd, 0x7362);
}

// w_scale * acc / 16 (the accumulator is 16x the dot product, above). (a * b) * 1/16: the same
// rounding as a * b on the plain accumulator.
template <class T>
struct MultipliesSixteenth {
  CUTLASS_HOST_DEVICE T operator()(T const& a, T const& b) const { return (a * b) * T(0.0625f); }
};

template <class T, int N>
struct MultipliesSixteenth<cutlass::Array<T, N>> {
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& a, cutlass::Array<T, N> const& b) const {
    cutlass::Array<T, N> r;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) r[i] = (a[i] * b[i]) * T(0.0625f);
    return r;
  }
};

}  // namespace qengine::w4a8::sm90

namespace cutlass {

template <class LayoutIn, class LayoutOut>
struct LayoutAwareConvertImpl<cutlass::int4b_t, int8_t, LayoutIn, LayoutOut> {
  template <class EngineIn, class EngineOut>
  CUTLASS_DEVICE static void convert(cute::Tensor<EngineIn, LayoutIn> const& src,
                                     cute::Tensor<EngineOut, LayoutOut>& dst) {
    static_assert(cute::is_same_v<cutlass::int4b_t, typename EngineIn::value_type> &&
                  cute::is_same_v<int8_t, typename EngineOut::value_type>);
    static_assert(cute::cosize_v<LayoutIn> == cute::cosize_v<LayoutOut>);
    constexpr int N = decltype(cute::max_common_vector(LayoutIn{}, LayoutOut{})){};
    static_assert(N % 8 == 0, "the W4A8 widening takes 8 contiguous nibbles at a time");
    using SrcArray = cutlass::Array<cutlass::int4b_t, N>;
    using DstArray = cutlass::Array<int8_t, N>;
    auto&& src_vm = cute::recast<SrcArray>(src);
    auto&& dst_vm = cute::recast<DstArray>(dst);
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < src_vm.size(); ++i) {
      const uint32_t* in = reinterpret_cast<const uint32_t*>(src_vm(i).raw_data());
      uint32_t* out = reinterpret_cast<uint32_t*>(dst_vm(i).raw_data());
      CUTLASS_PRAGMA_UNROLL
      for (int j = 0; j < N / 8; ++j) qengine::w4a8::sm90::widen_8_times16(in[j], out[2 * j], out[2 * j + 1]);
    }
  }
};

}  // namespace cutlass
