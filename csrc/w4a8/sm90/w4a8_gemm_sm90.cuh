// CUTLASS 3.x mixed-input GEMM for W4A8 on sm_90a: INT4 weights x INT8 activations.
//
// The mainloop is CUTLASS's RS (register-sourced A) mixed-input collective in "convert only"
// mode: TMA brings the 4-bit weight tile (prepacked, weight_layout.cuh) and the 8-bit
// activation tile to shared memory; each consumer thread loads its weight fragment into
// registers, widens 8 nibbles at a time to INT8 as 16 x w (widen_int4_times16.cuh: 5 integer ops
// per 8 values) and issues the INT8 wgmma with the activations from shared memory. Per-channel
// weight scales make the integer accumulator (16x the dot product) exact over the whole K, so
// both scales go to the epilogue:
//   out^T[n, m] = a_scale[m] * ((w_scale[n] * acc[n, m]) / 16) + bias[n] (+ lowrank^T[n, m])
#pragma once

#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "qengine/cutlass_run.cuh"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/numeric_types.h"

#include "qengine/w4a8_gemm.h"
#include "lowrank_staged_epilogue.cuh"
#include "weight_layout.cuh"
#include "widen_int4_times16.cuh"

namespace qengine::w4a8::sm90 {

using namespace cute;

// Keeps the kernel body out of every pass but sm_90 (guards against a stray -gencode).
template <typename Kernel>
struct Sm90Only : Kernel {
  template <typename... Args>
  CUTLASS_DEVICE void operator()(Args&&... args) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
    Kernel::operator()(std::forward<Args>(args)...);
#endif
  }
};

namespace fusion = cutlass::epilogue::fusion;

// How a kernel instantiation takes the low-rank branch (one translation unit each):
//   kNone    no branch;
//   kSource  its [M, N] product (cuBLAS, in the binding) read as the epilogue's C operand;
//   kStaged  lowrank_act and lora_up themselves, multiplied in the epilogue from shared memory
//            (lowrank_staged_epilogue.cuh; cooperative configs, rank <= kW4A8StagedMaxRank: 32,
//            SVDQuant's default; the staged rows cost (rows + tokens) x 32 x 2 bytes of shared memory
//            per tile, 24 KB at 128x256, taken from the mainloop's stages).
enum class LowRank : int { kNone = 0, kSource = 1, kStaged = 2 };

constexpr auto kRasterOrderAlongN = cutlass::gemm::kernel::detail::RasterOrderOptions::AlongN;

// Epilogue trees in the transposed problem: rows = output channels n, columns = tokens m.
// ClusterShape and kRasterAlongN: the kernel's, which the staged node needs to follow the tile
// scheduler (see lowrank_staged_epilogue.cuh).
template <typename TileShape, typename ElementOut, LowRank kLowRank, typename ClusterShape, bool kRasterAlongN>
struct EpilogueTree {
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;
  using Acc = fusion::Sm90AccFetch;
  using WScale = fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, _0>>;
  using AScale = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, _0>>;
  using Bias = fusion::Sm90ColBroadcast<0, TileShape, ElementOut, float, Stride<_1, _0, _0>>;
  // (w_scale / 16) * acc: the mainloop widens the weights to 16 x w (widen_int4_times16.cuh).
  using MulW = fusion::Sm90Compute<MultipliesSixteenth, float, float, kRound>;
  using AccW = fusion::Sm90EVT<MulW, WScale, Acc>;
  using FmaA = fusion::Sm90Compute<cutlass::homogeneous_multiply_add, ElementOut, float, kRound>;
  // The low-rank product arrives as the epilogue's source operand C (TMA-loaded by the
  // producer warp, overlapped with the mainloop), added to the bias before the final FMA.
  using AddC = fusion::Sm90Compute<cutlass::plus, float, float, kRound>;
  using BiasPlusC = fusion::Sm90EVT<AddC, Bias, fusion::Sm90SrcFetch<ElementOut>>;
  using Staged = Sm90LowRankStaged<TileShape, ElementOut, kW4A8StagedMaxRank, ClusterShape>;
  using BiasPlusStaged = fusion::Sm90EVT<AddC, Bias, Staged>;
  using Tree = fusion::Sm90EVT<FmaA, AScale, AccW,
                               cute::conditional_t<kLowRank == LowRank::kSource, BiasPlusC,
                                                   cute::conditional_t<kLowRank == LowRank::kStaged, BiasPlusStaged, Bias>>>;

  // scheduler: the kernel's tile scheduler arguments, which the staged node copies.
  template <class SchedulerArguments>
  static typename Tree::Arguments arguments(const W4A8GemmParams& p, SchedulerArguments const& scheduler) {
    typename AScale::Arguments a_scale{p.a_scale, 0.f, {}};
    typename AccW::Arguments acc_w{{p.w_scale, 0.f, {}}, {}, {}};
    typename Bias::Arguments bias{static_cast<const ElementOut*>(p.bias), ElementOut(0.f), {}};
    if constexpr (kLowRank == LowRank::kSource) {
      return {a_scale, acc_w, {bias, {}, {}}, {}};
    } else if constexpr (kLowRank == LowRank::kStaged) {
      typename Staged::Arguments staged{static_cast<const ElementOut*>(p.lowrank_act_out),
                                        static_cast<const ElementOut*>(p.lora_up), p.rank, p.sm_count,
                                        scheduler};
      return {a_scale, acc_w, {bias, staged, {}}, {}};
    } else {
      return {a_scale, acc_w, bias, {}};
    }
  }
};

// kRasterAlongN: the tile scheduler walks the token tiles of a weight-row block first (else
// CUTLASS's heuristic order).
template <typename ElementOut, LowRank kLowRank, typename TileShape, typename ClusterShape, typename KernelSchedule,
          typename EpilogueSchedule, typename TileScheduler, bool kRasterAlongN = false>
struct W4A8Gemm {
  using ElementW = cutlass::int4b_t;
  using ElementA = int8_t;
  using ElementAcc = int32_t;
  // Transposed problem: D^T [N x M] column-major == out [M x N] row-major.
  using LayoutAct = cutlass::layout::ColumnMajor;   // the activations as the K x M B operand
  using LayoutOutT = cutlass::layout::ColumnMajor;
  static constexpr int kAlignW = 32;    // 16 bytes of 4-bit values
  static constexpr int kAlignA = 16;
  static constexpr int kAlignOut = 8;

  using Tree = EpilogueTree<TileShape, ElementOut, kLowRank, ClusterShape, kRasterAlongN>;
  using ElementC = cute::conditional_t<kLowRank == LowRank::kSource, ElementOut, void>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, float,
      ElementC, LayoutOutT, kAlignOut,
      ElementOut, LayoutOutT, kAlignOut,
      EpilogueSchedule, typename Tree::Tree>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      ElementW, WeightLayout, kAlignW,
      ElementA, LayoutAct, kAlignA,
      ElementAcc, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;

  using KernelBase = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                          CollectiveEpilogue, TileScheduler>;
  using Kernel = Sm90Only<KernelBase>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const W4A8GemmParams& p) {
    using StrideB = typename KernelBase::StrideB;
    using StrideD = typename KernelBase::StrideD;
    using StrideC = typename KernelBase::StrideC;
    StrideB stride_act = make_stride(p.lda, Int<1>{}, int64_t(0));
    StrideD stride_out = make_stride(Int<1>{}, p.ldo, int64_t(0));
    StrideC stride_c{};
    const ElementOut* ptr_c = nullptr;
    if constexpr (kLowRank == LowRank::kSource) {
      stride_c = make_stride(Int<1>{}, p.ldo, int64_t(0));
      ptr_c = static_cast<const ElementOut*>(p.lowrank);
    }

    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = p.sm_count;

    // The scheduler's arguments first: the staged low-rank node gets the same ones.
    typename KernelBase::TileScheduler::Arguments scheduler{};
    if constexpr (kRasterAlongN) scheduler.raster_order = kRasterOrderAlongN;
    if constexpr (cute::is_same_v<TileScheduler, cutlass::gemm::StreamKScheduler>) {
      // The partial tiles are int32 sums: added in any order they are exact, so the reduction
      // need not wait for the splits in turn (CUTLASS's "nondeterministic" mode is
      // deterministic here). Stream-K vs split-K: CUTLASS's heuristic, from the tile and SM counts.
      using Sched = typename KernelBase::TileScheduler;
      scheduler.reduction_mode = Sched::ReductionMode::Nondeterministic;
      scheduler.decomposition_mode = Sched::DecompositionMode::Heuristic;
    }
    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {p.N, p.M, p.K, 1},
        {reinterpret_cast<const ElementW*>(p.w), make_weight_layout(p.N, p.K), p.a, stride_act},
        {Tree::arguments(p, scheduler), ptr_c, stride_c, static_cast<ElementOut*>(p.out), stride_out},
        hw,
        scheduler};
    return args;
  }

  static size_t workspace_bytes(const W4A8GemmParams& p) { return Gemm::get_workspace_size(arguments(p)); }

  static cudaError_t run(const W4A8GemmParams& p, cudaStream_t stream) {
    return run_cutlass_op<Gemm>(arguments(p), p, stream);
  }
};

// A named config: tile (weight rows x tokens x K), cooperative (two warp groups on one tile) or
// ping-pong (one tile per warp group), the persistent or the stream-K tile scheduler, and
// clusters of kClusterRows row tiles that share (TMA-multicast) their activation tile, walked
// along the tokens (the W8A8 INT8 kernel's order for its clusters, in its untransposed view).
template <int kRows, int kTokens, int kK, bool kCooperative, bool kStreamK = false, int kClusterRows = 1>
struct TileConfig {
  using Tile = Shape<Int<kRows>, Int<kTokens>, Int<kK>>;
  using Cluster = Shape<Int<kClusterRows>, _1, _1>;
  static constexpr bool kRasterAlongN = kClusterRows > 1;
  using Kernel = cute::conditional_t<kCooperative, cutlass::gemm::KernelTmaWarpSpecializedCooperative,
                                     cutlass::gemm::KernelTmaWarpSpecializedPingpong>;
  using Epilogue = cute::conditional_t<kCooperative, cutlass::epilogue::TmaWarpSpecializedCooperative,
                                       cutlass::epilogue::TmaWarpSpecialized>;
  using Scheduler = cute::conditional_t<kStreamK, cutlass::gemm::StreamKScheduler, cutlass::gemm::PersistentScheduler>;
};

template <W4A8TileConfig C> struct ConfigOf;
template <> struct ConfigOf<W4A8TileConfig::kSm90_128x128x128_Coop> : TileConfig<128, 128, 128, true> {};
template <> struct ConfigOf<W4A8TileConfig::kSm90_128x256x128_Coop> : TileConfig<128, 256, 128, true> {};
template <> struct ConfigOf<W4A8TileConfig::kSm90_64x128x128_Pingpong> : TileConfig<64, 128, 128, false> {};
template <> struct ConfigOf<W4A8TileConfig::kSm90_64x64x128_Pingpong> : TileConfig<64, 64, 128, false> {};
// 17..64 tokens: 128 weight rows x the tokens per tile, K shared out over the SMs by CUTLASS's
// stream-K scheduler (N = 3072 has only 24 such tiles for 132 SMs), partial tiles reduced through
// the workspace. Stream-K needs the cooperative kernel, hence 128 weight rows.
template <> struct ConfigOf<W4A8TileConfig::kSm90_128x64x128_CoopStreamK> : TileConfig<128, 64, 128, true, true> {};
template <> struct ConfigOf<W4A8TileConfig::kSm90_128x32x128_CoopStreamK> : TileConfig<128, 32, 128, true, true> {};

// Many tokens, the cooperative tiles in clusters of two row tiles: at FLUX's image stream the
// activation tile (tokens x K, 8-bit) is most of what a CTA reads from L2, and every row tile
// reads it again (~7-8 TB/s of L2 reads at 4608x3072->3072 on 128x128 tiles).
template <> struct ConfigOf<W4A8TileConfig::kSm90_128x256x128_Coop_C2x1> : TileConfig<128, 256, 128, true, false, 2> {};
// 224 tokens per tile: 21 token tiles cover FLUX's 4608 tokens (98% used) and 504 tiles of a
// 3072-wide layer fill 95% of 4 waves of 132 SMs (256-token tiles: 432, 82%).
template <> struct ConfigOf<W4A8TileConfig::kSm90_128x224x128_Coop_C2x1> : TileConfig<128, 224, 128, true, false, 2> {};

template <typename ElementOut, LowRank kLowRank, W4A8TileConfig C>
using GemmFor = W4A8Gemm<ElementOut, kLowRank, typename ConfigOf<C>::Tile, typename ConfigOf<C>::Cluster,
                         typename ConfigOf<C>::Kernel, typename ConfigOf<C>::Epilogue, typename ConfigOf<C>::Scheduler,
                         ConfigOf<C>::kRasterAlongN>;

// Defines NAME_run / NAME_workspace (declared in ../kernels.h) for one (config, LowRank mode);
// both output types in the same translation unit.
#define QENGINE_W4A8_SM90_DEFINE(NAME, CONFIG, LOWRANK)                                                   \
  cudaError_t NAME##_run(const W4A8GemmParams& p, cudaStream_t stream) {                                  \
    if (p.out_type == FloatType::kBF16) return GemmFor<cutlass::bfloat16_t, LOWRANK, CONFIG>::run(p, stream); \
    if (p.out_type == FloatType::kFP16) return GemmFor<cutlass::half_t, LOWRANK, CONFIG>::run(p, stream);     \
    return cudaErrorInvalidValue;                                                                          \
  }                                                                                                        \
  size_t NAME##_workspace(const W4A8GemmParams& p) {                                                      \
    if (p.out_type == FloatType::kBF16) return GemmFor<cutlass::bfloat16_t, LOWRANK, CONFIG>::workspace_bytes(p); \
    return GemmFor<cutlass::half_t, LOWRANK, CONFIG>::workspace_bytes(p);                                \
  }

}  // namespace qengine::w4a8::sm90
