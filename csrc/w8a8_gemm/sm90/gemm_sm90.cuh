// CUTLASS 3.x (TMA + wgmma, warp-specialized) W8A8 GEMM template for sm_90a.
#pragma once

#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/numeric_types.h"
#include "cutlass/util/packed_stride.hpp"

#include "qengine/w8a8_gemm.h"
#include "qengine/cutlass_run.cuh"
#include "lowrank_epilogue.cuh"
#include "../kernels.h"

namespace qengine::sm90 {

using namespace cute;

// Keeps the kernel body out of every pass but sm_90 (the TU is built for sm_90a only; this
// guards against a stray -gencode emitting a body that would trap at run time).
template <typename Kernel>
struct Sm90Only : Kernel {
  template <typename... Args>
  CUTLASS_DEVICE void operator()(Args&&... args) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
    Kernel::operator()(std::forward<Args>(args)...);
#endif
  }
};

template <typename ElementAB_, typename ElementOut_, typename TileShape_, typename ClusterShape_,
          typename KernelSchedule_, typename EpilogueSchedule_, typename TileScheduler_, bool kLowRank>
struct ScaledGemm {
  using ElementAB = ElementAB_;
  using ElementOut = ElementOut_;
  using ElementAcc = cute::conditional_t<cute::is_same_v<ElementAB, int8_t>, int32_t, float>;
  using ElementCompute = float;
  using TileShape = TileShape_;
  using ClusterShape = ClusterShape_;
  using LayoutA = cutlass::layout::RowMajor;
  using LayoutB = cutlass::layout::ColumnMajor;
  using LayoutD = cutlass::layout::RowMajor;
  static constexpr int kAlignAB = 16;
  static constexpr int kAlignD = 8;
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

  // Epilogue visitor tree: out = a_scale[m] * (w_scale[n] * acc) + bias[n]
  using Acc = cutlass::epilogue::fusion::Sm90AccFetch;
  using WScale = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, _0>>;
  using AScale = cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, _0>>;
  using Bias = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, ElementOut, float, Stride<_0, _1, _0>>;
  using MulW = cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>;
  using AccW = cutlass::epilogue::fusion::Sm90EVT<MulW, WScale, Acc>;
  using FmaA = cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, ElementOut, float, kRound>;
  // With the low-rank branch: out = a_scale[m] * (w_scale[n] * acc) + (bias[n] + lowrank_act[m,:] . lora_up[n,:]),
  // all in fp32, one rounding to ElementOut.
  using LowRank = Sm90LowRankUp;
  using AddLR = cutlass::epilogue::fusion::Sm90Compute<cutlass::plus, float, float, kRound>;
  using BiasLR = cutlass::epilogue::fusion::Sm90EVT<AddLR, Bias, LowRank>;
  using EVT = cute::conditional_t<kLowRank, cutlass::epilogue::fusion::Sm90EVT<FmaA, AScale, AccW, BiasLR>,
                                  cutlass::epilogue::fusion::Sm90EVT<FmaA, AScale, AccW, Bias>>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, ElementCompute,
      void, LayoutD, kAlignD,        // no C operand
      ElementOut, LayoutD, kAlignD,
      EpilogueSchedule_, EVT>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      ElementAB, LayoutA, kAlignAB, ElementAB, LayoutB, kAlignAB, ElementAcc,
      TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      KernelSchedule_>::CollectiveOp;

  using KernelBase = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                          CollectiveEpilogue, TileScheduler_>;
  using Kernel = Sm90Only<KernelBase>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const W8A8GemmParams& p) {
    using StrideA = typename KernelBase::StrideA;
    using StrideB = typename KernelBase::StrideB;
    using StrideD = typename KernelBase::StrideD;
    StrideA stride_a = make_stride(p.lda, Int<1>{}, int64_t(0));
    StrideB stride_b = make_stride(p.ldw, Int<1>{}, int64_t(0));
    StrideD stride_d = make_stride(p.ldo, Int<1>{}, int64_t(0));

    typename Bias::Arguments bias{static_cast<const ElementOut*>(p.bias), ElementOut(0.f), {}};  // nullptr -> 0
    auto bias_term = [&] {
      if constexpr (kLowRank) {
        return typename BiasLR::Arguments{
            bias, {p.lowrank_act, static_cast<const cutlass::bfloat16_t*>(p.lora_up), p.rank}, {}};
      } else {
        return bias;
      }
    }();
    typename EVT::Arguments evt{
        {static_cast<const float*>(p.a_scale), 0.f, {}},                           // AScale
        {{static_cast<const float*>(p.w_scale), 0.f, {}}, {}, {}},                 // AccW: WScale, Acc, op
        bias_term,                                                                  // Bias (+ low-rank)
        {}};                                                                        // FmaA op

    cutlass::KernelHardwareInfo hw;
    hw.device_id = 0;
    hw.sm_count = p.sm_count;

    typename Gemm::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {p.M, p.N, p.K, 1},
        {static_cast<const ElementAB*>(p.a), stride_a, static_cast<const ElementAB*>(p.w), stride_b},
        {evt, nullptr, stride_d, static_cast<ElementOut*>(p.out), stride_d},
        hw};
    using RasterOrder = cutlass::gemm::kernel::detail::RasterOrderOptions;
    args.scheduler.raster_order = p.raster == 1   ? RasterOrder::AlongM
                                  : p.raster == 2 ? RasterOrder::AlongN
                                                  : RasterOrder::Heuristic;
    args.scheduler.max_swizzle_size = p.swizzle;
    return args;
  }

  static size_t workspace_bytes(const W8A8GemmParams& p) { return Gemm::get_workspace_size(arguments(p)); }

  static cudaError_t run(const W8A8GemmParams& p, cudaStream_t stream) {
    return run_cutlass_op<Gemm>(arguments(p), p, stream);
  }
};

// The named configs (see W8A8TileConfig): ping-pong schedules (FP8 with fast accumulation), TMA
// epilogue, persistent scheduler; they differ in tile and cluster shape only.
template <typename ElementAB, W8A8TileConfig C> struct ConfigOf;

template <typename ElementAB, typename Tile_, typename Cluster_>
struct PingpongConfig {
  static constexpr bool kFP8 = !cute::is_same_v<ElementAB, int8_t>;
  using Tile = Tile_;
  using Cluster = Cluster_;
  using Kernel = cute::conditional_t<kFP8, cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum,
                                     cutlass::gemm::KernelTmaWarpSpecializedPingpong>;
  using Epilogue = cutlass::epilogue::TmaWarpSpecialized;
  using Scheduler = cutlass::gemm::PersistentScheduler;
};

template <typename ElementAB>
struct ConfigOf<ElementAB, W8A8TileConfig::kSm90_64x64x128_Pingpong_C1x4>
    : PingpongConfig<ElementAB, Shape<_64, _64, _128>, Shape<_1, _4, _1>> {};
template <typename ElementAB>
struct ConfigOf<ElementAB, W8A8TileConfig::kSm90_128x128x128_Pingpong_C2x1>
    : PingpongConfig<ElementAB, Shape<_128, _128, _128>, Shape<_2, _1, _1>> {};
template <typename ElementAB>
struct ConfigOf<ElementAB, W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2>
    : PingpongConfig<ElementAB, Shape<_128, _128, _128>, Shape<_1, _2, _1>> {};

// 64x160: SDXL's M = 1024 layers with N = 1280 are 8 x 10 = 80 tiles of 128x128 on 132 SMs (61%
// of one wave busy); 64x160 cuts them into 16 x 8 = 128 (97%). One consumer warpgroup per tile,
// as the 128x128 ping-pong runs when each CTA has a single tile.
template <typename ElementAB>
struct ConfigOf<ElementAB, W8A8TileConfig::kSm90_64x160x128_Pingpong_C1x1>
    : PingpongConfig<ElementAB, Shape<_64, _160, _128>, Shape<_1, _1, _1>> {};

template <typename ElementAB, typename ElementOut, W8A8TileConfig C, bool kLowRank>
using GemmFor = ScaledGemm<ElementAB, ElementOut, typename ConfigOf<ElementAB, C>::Tile,
                           typename ConfigOf<ElementAB, C>::Cluster, typename ConfigOf<ElementAB, C>::Kernel,
                           typename ConfigOf<ElementAB, C>::Epilogue, typename ConfigOf<ElementAB, C>::Scheduler, kLowRank>;

// Defines the entry points NAME_run / NAME_workspace (declared in ../kernels.h) for one
// (input type, config, low-rank epilogue or not); both output types live in the same translation unit.
#define QENGINE_SM90_DEFINE_VARIANT(NAME, ELEMENT_AB, CONFIG, LOWRANK)                                        \
  cudaError_t NAME##_run(const W8A8GemmParams& p, cudaStream_t stream) {                                      \
    if (p.out_type == FloatType::kBF16) return GemmFor<ELEMENT_AB, cutlass::bfloat16_t, CONFIG, LOWRANK>::run(p, stream); \
    if (p.out_type == FloatType::kFP16) return GemmFor<ELEMENT_AB, cutlass::half_t, CONFIG, LOWRANK>::run(p, stream);     \
    return cudaErrorInvalidValue;                                                                               \
  }                                                                                                             \
  size_t NAME##_workspace(const W8A8GemmParams& p) {                                                           \
    if (p.out_type == FloatType::kBF16) return GemmFor<ELEMENT_AB, cutlass::bfloat16_t, CONFIG, LOWRANK>::workspace_bytes(p); \
    return GemmFor<ELEMENT_AB, cutlass::half_t, CONFIG, LOWRANK>::workspace_bytes(p);                         \
  }
#define QENGINE_SM90_DEFINE(NAME, ELEMENT_AB, CONFIG) QENGINE_SM90_DEFINE_VARIANT(NAME, ELEMENT_AB, CONFIG, false)
#define QENGINE_SM90_DEFINE_LOWRANK(NAME, ELEMENT_AB, CONFIG) QENGINE_SM90_DEFINE_VARIANT(NAME##_lowrank, ELEMENT_AB, CONFIG, true)

}  // namespace qengine::sm90
