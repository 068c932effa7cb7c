// The prepacked ("shuffled") INT4 weight layout that the sm90 mixed-input mainloop reads.
//
// The RS wgmma takes its A operand (here: the weights, widened to INT8) from registers. Each
// thread of a warp owns a fixed set of (n, k) values of a 64x32 INT8 MMA fragment; in plain
// K-major order those values are scattered (2-byte pieces of 4-bit data), so loading them from
// shared memory would be sub-bank accesses and the 4->8 bit widening could not use the 8-wide
// PRMT sequence. The shuffle atom stores, per warp-sized 16x32 block of (n, k), every thread's
// values contiguously. This is the contract between w4a8_prepack (qengine/formats/w4a8_layout.py,
// which computes the same permutation in PyTorch) and the kernel; tests check both agree
// through the GEMM result.
#pragma once

#include "cute/tensor.hpp"
#include "cute/atom/mma_traits_sm90_gmma.hpp"

namespace qengine::w4a8 {

using namespace cute;

// (n, k) inside one 16x32 block -> offset: the same construction as CUTLASS's
// compute_memory_reordering_atom (tools/util/mixed_dtype_utils.hpp, not includable here: it
// pulls curand headers the CI machines lack).
template <class ElementMma>
constexpr auto weight_shuffle_atom() {
  // The accumulator type does not change the A fragment layout; INT8 GMMA needs int32.
  using Acc = cute::conditional_t<cute::is_same_v<ElementMma, int8_t>, int32_t, float>;
  using MmaAtom = decltype(SM90::GMMA::rs_op_selector<ElementMma, ElementMma, Acc, Shape<_64, _16, _32>>());
  using MmaTraits = MMA_Traits<MmaAtom>;
  auto mk_shape_mma = select<0, 2>(typename MmaTraits::Shape_MNK{});
  auto tv_layout_mma = typename MmaTraits::ALayout{};
  // One warp's (thread, value) -> (m, k) layout, inverted to (m, k) -> (thread, value).
  auto tv_tiler_warp = make_shape(Int<32>{}, size<1>(tv_layout_mma));
  auto mk_shape_warp = shape_div(mk_shape_mma, size(typename MmaTraits::ThrID{}) / Int<32>{});
  auto tv_layout_mma_warp = make_layout_like(composition(tv_layout_mma, tv_tiler_warp));
  auto mk_layout_mma_warp = right_inverse(tv_layout_mma_warp).with_shape(mk_shape_warp);
  // Values of a thread contiguous, threads one after another.
  auto val_to_offset = logical_product(Layout<_1>{}, size<1>(tv_layout_mma));
  auto thr_to_offset = make_layout(size<0>(tv_layout_mma_warp));
  auto tv_to_offset = select<1, 0>(logical_product(val_to_offset, thr_to_offset));
  return composition(tv_to_offset, mk_layout_mma_warp);
}

using WeightStride = cute::Stride<int64_t, cute::Int<1>, int64_t>;  // [N, K] K-major, batch
using WeightShuffleAtom = decltype(weight_shuffle_atom<int8_t>());
using WeightLayout = decltype(cute::tile_to_shape(WeightShuffleAtom{}, Layout<Shape<int, int, int>, WeightStride>{}));

inline WeightLayout make_weight_layout(int N, int K) {
  auto shape = make_shape(N, K, 1);
  return cute::tile_to_shape(WeightShuffleAtom{}, make_layout(shape, WeightStride{int64_t(K), Int<1>{}, int64_t(N) * K}));
}

}  // namespace qengine::w4a8
