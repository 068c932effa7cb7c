// The consumer side of CUTLASS's mixed-input RS mainloop, with the 4-bit weight fragments of a
// whole k-tile loaded from shared memory one k-block ahead of the k-tile.
//
// Why: in CUTLASS's loop (sm90_mma_tma_gmma_rs_warpspecialized_mixed_input.hpp) each 32-deep
// k-block does: wgmma(k), wait until <= 3 wgmmas are pending, load k+2's fragment from shared
// memory, widen k+1's. The wgmma is asynchronous, so one iteration issues in a few dozen cycles
// and k+1's load, issued one iteration earlier, is still in flight when the widening needs it:
// the SASS shows each LDS consumed a handful of instructions later, so every k-block waits out a
// shared-memory latency (~30 cycles) plus the widening chain before its wgmma can issue. That is
// longer than a wgmma of the small tiles (64x64x32: 32 cycles of tensor core), so the few-token
// configs ran their tensor cores well under half busy (notes/w4a8.md).
//
// Here the k-tile's fragments (4 k-blocks x 8 bytes per thread) are all loaded while the k-tile
// before it is still issuing (after its second-to-last k-block), so a k-block's wait is the
// widening alone. The wgmma / wait / release sequence is CUTLASS's: one stage released per
// k-tile with the k-tile after it in flight, the last one by the base class's mma_tail, at most
// K_BLOCKS - 1 wgmmas pending when a fragment register is rewritten. No extra registers: the
// 4-bit fragments of a whole k-tile were already held (tCrA_load).
#pragma once

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/gemm/collective/collective_builder.hpp"

namespace qengine::w4a8::sm90 {

template <class Base>
struct PrefetchingMixedInputMainloop : Base {
  using typename Base::MainloopPipeline;
  using typename Base::Params;
  using typename Base::PipelineState;
  using typename Base::TensorStorage;

  template <class FrgTensorC>
  CUTLASS_DEVICE void mma(MainloopPipeline pipeline, PipelineState smem_pipe_read, FrgTensorC& accum, int k_tile_count,
                          int thread_idx, TensorStorage& shared_tensors, Params const& mainloop_params) {
    using namespace cute;
    using TiledMma = typename Base::TiledMma;
    using Utils = cutlass::gemm::collective::detail::MixedInputUtils<Base>;  // the base names it privately
    static_assert(is_rmem<FrgTensorC>::value, "C tensor must be rmem resident.");
    static_assert(!Base::ModeHasScales, "the W4A8 kernels take per-channel scales in the epilogue (convert-only mode)");
    static_assert(is_layout<typename Base::SwappedStrideA>::value,
                  "the 4-bit fragments are loaded in their shared-memory order (the prepacked weight layout)");

    const int wg_thread_idx = thread_idx % cutlass::NumThreadsPerWarpGroup;
    Tensor sA = as_position_independent_swizzle_tensor(
        make_tensor(make_smem_ptr(shared_tensors.smem_A.begin()), typename Base::SmemLayoutA{}));  // (BLK_M,BLK_K,PIPE)
    Tensor sB = make_tensor(make_smem_ptr(shared_tensors.smem_B.begin()), typename Base::SmemLayoutB{});

    constexpr int kWarpGroups = size(TiledMma{}) / cutlass::NumThreadsPerWarpGroup;
    const int warp_group_idx = __shfl_sync(0xFFFFFFFF, thread_idx / cutlass::NumThreadsPerWarpGroup, 0);
    TiledMma tiled_mma;
    auto thr_mma = tiled_mma.get_thread_slice(thread_idx);
    auto wg_mma = tiled_mma.get_slice(make_layout(Int<kWarpGroups>{}, Int<cutlass::NumThreadsPerWarpGroup>{})(warp_group_idx));

    Tensor tCsA = thr_mma.partition_A(sA);                                      // (MMA,MMA_M,MMA_K,PIPE)
    Tensor tCrA_mma = thr_mma.partition_fragment_A(sA(_, _, Int<0>{}));          // widened, (MMA,MMA_M,MMA_K)
    Tensor tCrA_load = make_tensor_like<typename Base::RealSwappedElementA>(tCsA(_, _, _, Int<0>{}));  // 4-bit
    Tensor tCrB = wg_mma.make_fragment_B(wg_mma.partition_B(sB));               // (MMA,MMA_N,MMA_K,PIPE)

    auto smem_copy_A = make_tiled_copy_A(typename Base::SwappedSmemCopyAtomA{}, tiled_mma);
    Tensor tCrA_copy_view = smem_copy_A.get_thread_slice(wg_thread_idx).retile_D(tCrA_load);
    auto extra_info = Utils::partition_extra_mma_info(thr_mma, shared_tensors);
    auto copy_extra_info = Utils::retile_extra_mma_info(tiled_mma, extra_info, wg_thread_idx);

    constexpr int kBlocks = size<2>(tCrA_load);
    static_assert(kBlocks >= 2, "the prefetch needs at least two k-blocks per k-tile");
    // The wgmma of k-block k of the previous k-tile last read the registers that k-block k of
    // this one is widened into; kBlocks - 1 pending is the most that guarantees it finished.
    constexpr int kMaxPending = kBlocks - 1;
    static_assert(kMaxPending <= 7, "wgmma.wait_group takes at most 7");

    auto wait_for = [&](PipelineState const& state) {
      auto token = pipeline.consumer_try_wait(state);
      pipeline.consumer_wait(state, token);
    };
    auto load_k_tile = [&](int stage) {
      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < kBlocks; ++k) {
        Utils::copy_tensors_MK(smem_copy_A, tCsA, tCrA_copy_view, extra_info, copy_extra_info, k, stage);
      }
    };

    PipelineState smem_pipe_release = smem_pipe_read;
    wait_for(smem_pipe_read);
    load_k_tile(smem_pipe_read.index());
    Utils::dequantize_A_kblock(tCrA_load, tCrA_mma, extra_info, 0);

    // One k-tile. The first and the last are separate instantiations (as in CUTLASS's loop) so
    // that the steady-state loop has no conditions: ptxas serializes the wgmmas (C7513) when it
    // cannot see that the registers written between them are not read by those in flight.
    auto k_tile = [&](auto first_k_tile, auto has_next) {
      const int read_stage = smem_pipe_read.index();
      ++smem_pipe_read;  // now the next k-tile's stage
      warpgroup_fence_operand(accum);
      CUTLASS_PRAGMA_UNROLL
      for (int k = 0; k < kBlocks; ++k) {
        warpgroup_arrive();
        cute::gemm(tiled_mma, tCrA_mma(_, _, k), tCrB(_, _, k, read_stage), accum);
        tiled_mma.accumulate_ = GMMA::ScaleOut::One;
        warpgroup_commit_batch();
        warpgroup_wait<kMaxPending>();
        if constexpr (!decltype(first_k_tile)::value) {
          if (k == kBlocks - 1) {
            // Every wgmma of the previous k-tile has finished: its stage goes back to the producer.
            pipeline.consumer_release(smem_pipe_release);
            ++smem_pipe_release;
          }
        }
        if (k < kBlocks - 1) Utils::dequantize_A_kblock(tCrA_load, tCrA_mma, extra_info, k + 1);
        if constexpr (decltype(has_next)::value) {
          // The last k-block's fragment is widened (just above): the 4-bit registers are free for
          // the next k-tile, loaded now so that its first widening does not wait for shared memory.
          if (k == kBlocks - 2) {
            wait_for(smem_pipe_read);
            load_k_tile(smem_pipe_read.index());
          }
          if (k == kBlocks - 1) Utils::dequantize_A_kblock(tCrA_load, tCrA_mma, extra_info, 0);
        }
      }
      warpgroup_fence_operand(accum);
    };

    tiled_mma.accumulate_ = GMMA::ScaleOut::Zero;
    warpgroup_fence_operand(accum);
    if (k_tile_count == 1) {
      k_tile(cute::true_type{}, cute::false_type{});
      return;
    }
    k_tile(cute::true_type{}, cute::true_type{});
    CUTLASS_PRAGMA_NO_UNROLL
    for (--k_tile_count; k_tile_count > 1; --k_tile_count) k_tile(cute::false_type{}, cute::true_type{});
    k_tile(cute::false_type{}, cute::false_type{});
    warpgroup_fence_operand(accum);
  }
};

}  // namespace qengine::w4a8::sm90
