// CUTLASS 3.x implicit-GEMM conv2d fprop (TMA im2col + wgmma, warp-specialized) for sm_90a,
// with the dequantizing epilogue of qengine/conv2d.h as an epilogue visitor tree.
#pragma once

#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "qengine/cutlass_run.cuh"
#include "cutlass/kernel_hardware_info.hpp"
#include "cutlass/conv/collective/collective_builder.hpp"
#include "cutlass/conv/convnd_problem_shape.hpp"
#include "cutlass/conv/device/conv_universal_adapter.hpp"
#include "cutlass/conv/dispatch_policy.hpp"
#include "cutlass/conv/kernel/conv_universal.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/numeric_types.h"

#include "conv2d_splitk.cuh"
#include "qengine/conv2d.h"

namespace qengine::conv_sm90 {

using namespace cute;

// Emits the kernel body only in the sm_90 pass (the TU is built for 90a only; this guards
// against a stray -gencode producing a body that would trap at run time).
template <typename Kernel>
struct Sm90Only : Kernel {
  template <typename... Args>
  CUTLASS_DEVICE void operator()(Args&&... args) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ == 900
    Kernel::operator()(std::forward<Args>(args)...);
#endif
  }
};

// CUTLASS's conv mainloop collective with another TiledMma (same smem layouts, copies, pipeline):
// its builder makes one-warpgroup MMAs only for the non-persistent conv kernel.
template <class Collective, class NewTiledMma> struct WithTiledMma;
template <class Policy, class Tile, class A, class B, class OldTiledMma, class TraitsA, class TraitsB, class NewTiledMma>
struct WithTiledMma<cutlass::conv::collective::CollectiveConv<Policy, Tile, A, B, OldTiledMma, TraitsA, TraitsB>, NewTiledMma> {
  using type = cutlass::conv::collective::CollectiveConv<Policy, Tile, A, B, NewTiledMma, TraitsA, TraitsB>;
};

// ConsumerWGs = 2: two consumer warpgroups split the tile's rows (a 256-row tile: 128 each), as
// in CUTLASS's cooperative GEMM. A 256x128 tile moves 3/4 of the L2 bytes per MMA of two 128x128
// tiles, and the two warpgroups keep two wgmma batches in flight per SM.
//
// ClusterShape_ (M, N, 1): CTAs of a cluster along N share their activation tile (one L2 read,
// TMA-multicast to each), along M their filter tile.
template <typename ElementQ_, typename ElementOut_, typename TileShape_, int Stages_, int ConsumerWGs = 1,
          typename ClusterShape_ = Shape<_1, _1, _1>>
struct ScaledConv {
  using ElementQ = ElementQ_;
  using ElementOut = ElementOut_;
  using ElementAcc = cute::conditional_t<cute::is_same_v<ElementQ, int8_t>, int32_t, float>;
  using TileShape = TileShape_;
  using ClusterShape = ClusterShape_;
  static constexpr int kAlignQ = 16;
  static constexpr int kAlignOut = 8;
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;
  static constexpr auto kConvOp = cutlass::conv::Operator::kFprop;

  // Epilogue visitor tree:
  //   out = beta * residual + (x_scale * (w_scale[o] * acc) + bias[o])
  // The outer node has CUTLASS's "beta * C + Z" form (Sm90TreeVisitor specialization): with a
  // host beta of 0 the residual is never loaded, so one kernel serves both cases.
  using Acc = cutlass::epilogue::fusion::Sm90AccFetch;
  using WScale = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, _0>>;
  using XScale = cutlass::epilogue::fusion::Sm90ScalarBroadcast<float, Stride<_0, _0, _0>>;
  using Bias = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, ElementOut, float, Stride<_0, _1, _0>>;
  using Beta = cutlass::epilogue::fusion::Sm90ScalarBroadcast<float, Stride<_0, _0, _0>>;
  using Residual = cutlass::epilogue::fusion::Sm90SrcFetch<ElementOut>;
  using Mul = cutlass::epilogue::fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>;
  using Fma = cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, float, float, kRound>;
  using FmaOut = cutlass::epilogue::fusion::Sm90Compute<cutlass::homogeneous_multiply_add, ElementOut, float, kRound>;
  using AccW = cutlass::epilogue::fusion::Sm90EVT<Mul, WScale, Acc>;
  using Dequant = cutlass::epilogue::fusion::Sm90EVT<Fma, XScale, AccW, Bias>;
  using EVT = cutlass::epilogue::fusion::Sm90EVT<FmaOut, Beta, Residual, Dequant>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAcc, float,
      ElementOut, cutlass::layout::TensorNHWC, kAlignOut,
      ElementOut, cutlass::layout::TensorNHWC, kAlignOut,
      cute::conditional_t<ConsumerWGs == 2, cutlass::epilogue::TmaWarpSpecializedCooperative, cutlass::epilogue::TmaWarpSpecialized>,
      EVT>::CollectiveOp;

  using BuiltMainloop = typename cutlass::conv::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, kConvOp,
      ElementQ, cutlass::layout::TensorNHWC, kAlignQ,
      ElementQ, cutlass::layout::TensorNHWC, kAlignQ,
      ElementAcc, TileShape, ClusterShape,
      cutlass::conv::collective::StageCount<Stages_>,
      cutlass::conv::KernelImplicitTmaWarpSpecializedSm90>::CollectiveOp;
  using TiledMma = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<ElementQ, ElementQ, ElementAcc, TileShape, cute::GMMA::Major::K, cute::GMMA::Major::K>(),
      Layout<Shape<Int<ConsumerWGs>, _1, _1>>{}));
  using CollectiveMainloop = cute::conditional_t<ConsumerWGs == 1, BuiltMainloop, typename WithTiledMma<BuiltMainloop, TiledMma>::type>;

  using ProblemShape = cutlass::conv::ConvProblemShape<kConvOp, CollectiveMainloop::DispatchPolicy::NumSpatialDimensions>;
  // CUTLASS's non-persistent kernel with the K loop optionally split over grid z (conv2d_splitk.cuh).
  using KernelBase = SplitKConv<cutlass::conv::kernel::ConvUniversal<ProblemShape, CollectiveMainloop, CollectiveEpilogue>>;
  using Kernel = Sm90Only<KernelBase>;
  using Conv = cutlass::conv::device::ConvUniversalAdapter<Kernel>;

  static typename Conv::Arguments arguments(const QConv2dParams& p) {
    // Activation [B,H,W,C] packed; filter [O,kh,kw,C] viewed inside rows of Cw channels.
    const int64_t cw = p.w_channels;
    ProblemShape shape(cutlass::conv::Mode::kCrossCorrelation,
                       {p.B, p.H, p.W, p.C}, {int64_t(p.H) * p.W * p.C, int64_t(p.W) * p.C, int64_t(p.C), 1},
                       {p.O, p.kh, p.kw, p.C}, {int64_t(p.kh) * p.kw * cw, int64_t(p.kw) * cw, cw, 1},
                       {p.pad_h, p.pad_w}, {p.pad_h, p.pad_w}, {p.stride_h, p.stride_w}, {p.dil_h, p.dil_w}, 1);

    using StrideD = typename KernelBase::StrideD;
    StrideD stride_d{};
    // Modes ((Q,P,N), O, _0): the packed NHWC output strides, innermost spatial first.
    cute::for_each(cute::make_seq<cute::rank<0>(StrideD{})>{}, [&](auto i) {
      cute::get<0, i>(stride_d) = shape.stride_C[ProblemShape::RankT - 2 - i];
    });

    const bool has_residual = p.residual != nullptr;
    typename EVT::Arguments evt{
        {{has_residual ? 1.f : 0.f}, {}, {}},                                          // Beta
        {},                                                                             // Residual
        {                                                                               // Dequant
            {{0.f}, {p.x_scale}, {}},                                                   //   XScale (device ptr)
            {{p.w_scale, 0.f, {}}, {}, {}},                                             //   AccW
            {static_cast<const ElementOut*>(p.bias), ElementOut(0.f), {}},             //   Bias (nullptr -> 0)
            {}},
        {}};

    // Without a residual C is never read (beta == 0); it still needs a valid address for the
    // TMA descriptor, so it points at the output.
    const ElementOut* c_ptr = static_cast<const ElementOut*>(has_residual ? p.residual : p.out);
    typename Conv::Arguments args;
    static_cast<typename KernelBase::BaseArguments&>(args) = typename KernelBase::BaseArguments{
        shape,
        {static_cast<const ElementQ*>(p.x), static_cast<const ElementQ*>(p.w)},
        {evt, c_ptr, stride_d, static_cast<ElementOut*>(p.out), stride_d}};
    args.splits = p.splits > 1 ? p.splits : 1;
    return args;
  }

  static size_t workspace_bytes(const QConv2dParams& p) { return Conv::get_workspace_size(arguments(p)); }

  static cudaError_t run(const QConv2dParams& p, cudaStream_t stream) {
    return run_cutlass_op<Conv>(arguments(p), p, stream);
  }
};

// N = 160 divides every UNet width (320, 640, 1280): with it the SDXL 640- and 1280-channel convs
// fit in one wave of 132 SMs (128 tiles), where 128x128 tiles need 160 (two waves) or 80 (61% of
// the SMs busy). ptxas: 128-row tiles use 168-238 registers per thread (one 256-thread CTA per
// SM); 64x160 uses 122-126 and 113 KB of shared memory, so two of its CTAs can share an SM.
template <QConvTileConfig C> struct ConfigOf;
template <> struct ConfigOf<QConvTileConfig::kSm90_128x128x128_S4> {
  using Tile = Shape<_128, _128, Shape<_128>>;
  static constexpr int kStages = 4;
  static constexpr int kConsumerWGs = 1;
  using Cluster = Shape<_1, _1, _1>;
};
template <> struct ConfigOf<QConvTileConfig::kSm90_128x160x128_S4> {
  using Tile = Shape<_128, _160, Shape<_128>>;
  static constexpr int kStages = 4;
  static constexpr int kConsumerWGs = 1;
  using Cluster = Shape<_1, _1, _1>;
};
template <> struct ConfigOf<QConvTileConfig::kSm90_64x160x128_S4> {
  using Tile = Shape<_64, _160, Shape<_128>>;
  static constexpr int kStages = 4;
  static constexpr int kConsumerWGs = 1;
  using Cluster = Shape<_1, _1, _1>;
};
template <> struct ConfigOf<QConvTileConfig::kSm90_256x128x128_S4> {
  using Tile = Shape<_256, _128, Shape<_128>>;
  static constexpr int kStages = 4;
  static constexpr int kConsumerWGs = 2;
  using Cluster = Shape<_1, _1, _1>;
};
template <> struct ConfigOf<QConvTileConfig::kSm90_256x160x128_S4> {
  using Tile = Shape<_256, _160, Shape<_128>>;
  static constexpr int kStages = 4;
  static constexpr int kConsumerWGs = 2;
  using Cluster = Shape<_1, _1, _1>;
};

// 256x128 in clusters of two along N: the pair reads its 256-row activation tile from L2 once.
// Split-K is what it is for (configs.cu): SDXL's 1280-channel conv at 32x32 as 120 CTAs of
// 256x128 over 3 splits reads 177 MB from L2, 118 MB clustered. Measured (H100, session 11): 35.8
// vs 36.9 us unclustered and 39 us for 80 unsplit 128x128 tiles, so L2 was only part of the limit.
template <> struct ConfigOf<QConvTileConfig::kSm90_256x128x128_C1x2_S4> {
  using Tile = Shape<_256, _128, Shape<_128>>;
  static constexpr int kStages = 4;
  static constexpr int kConsumerWGs = 2;
  using Cluster = Shape<_1, _2, _1>;
};

template <typename ElementQ, typename ElementOut, QConvTileConfig C>
using ConvFor = ScaledConv<ElementQ, ElementOut, typename ConfigOf<C>::Tile, ConfigOf<C>::kStages, ConfigOf<C>::kConsumerWGs,
                           typename ConfigOf<C>::Cluster>;

// Defines NAME_run / NAME_workspace (declared in ../kernels.h) for one (input type, config);
// both output types live in the same translation unit.
#define QENGINE_CONV_SM90_DEFINE(NAME, ELEMENT_Q, CONFIG)                                                       \
  cudaError_t NAME##_run(const QConv2dParams& p, cudaStream_t stream) {                                         \
    if (p.out_type == FloatType::kBF16) return ConvFor<ELEMENT_Q, cutlass::bfloat16_t, CONFIG>::run(p, stream);  \
    if (p.out_type == FloatType::kFP16) return ConvFor<ELEMENT_Q, cutlass::half_t, CONFIG>::run(p, stream);      \
    return cudaErrorInvalidValue;                                                                               \
  }                                                                                                             \
  size_t NAME##_workspace(const QConv2dParams& p) {                                                             \
    if (p.out_type == FloatType::kBF16) return ConvFor<ELEMENT_Q, cutlass::bfloat16_t, CONFIG>::workspace_bytes(p); \
    return ConvFor<ELEMENT_Q, cutlass::half_t, CONFIG>::workspace_bytes(p);                                     \
  }

}  // namespace qengine::conv_sm90
