// The 4 -> 8 bit widening of the W4A8 wgmma mainloop, as 16 x w instead of w.
//
// CUTLASS's NumericArrayConverter<int8_t, int4b_t, 8> sign-extends 8 nibbles with 13 integer
// ops (shift, masks, a PRMT per half to replicate sign bits, two PRMTs to interleave). The
// mixed-input mainloop runs it in the dependency chain between one wgmma and the next, for every
// 32-deep k-block. widen_8_times16 (widen_8_times16.cuh) takes 5: each nibble moved to the high
// half of its byte is the int8 value 16 x w. The epilogue multiplies w_scale * acc by 1/16
// (MultipliesSixteenth below, as (w_scale / 16) * acc), so the output is bit-identical; K <= 65536.
//
// Hooked in through CUTLASS's LayoutAwareConvertImpl, which the mixed-input collective's
// dequantize_A_kblock calls for every register fragment: a partial specialization for
// int4b_t -> int8_t. Only the W4A8 wgmma translation units include this header (through
// w4a8_gemm_sm90.cuh), and every one of them sees it before the collective is instantiated.
#pragma once

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/array.h"
#include "cutlass/detail/collective/mixed_input_utils.hpp"
#include "cutlass/numeric_types.h"
#include "widen_8_times16.cuh"

namespace qengine::w4a8::sm90 {

// w_scale * acc / 16 (the accumulator is 16x the dot product) as (w_scale / 16) * acc: w_scale / 16
// is exact (a power of two), so the product is the real number w_scale * (acc / 16) rounded once,
// the same value as on the plain accumulator; and w_scale / 16 is one multiply per row of the
// thread's fragment instead of one per value (the broadcast node gives the values of a row one
// register, so the compiler computes it once per row).
template <class T>
struct MultipliesSixteenth {
  CUTLASS_HOST_DEVICE T operator()(T const& w_scale, T const& acc) const { return (w_scale * T(0.0625f)) * acc; }
};

template <class T, int N>
struct MultipliesSixteenth<cutlass::Array<T, N>> {
  CUTLASS_HOST_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& w_scale,
                                                      cutlass::Array<T, N> const& acc) const {
    cutlass::Array<T, N> r;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) r[i] = (w_scale[i] * T(0.0625f)) * acc[i];
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
