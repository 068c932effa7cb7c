// CUTLASS 2.x (multistage mma.sync) W8A8 GEMM template for sm_80 / sm_86 / sm_89 (and, for
// testing, sm_90). The epilogue is a 2.x visitor tree with the same math as the sm90 one.
#pragma once

#include <cuda_runtime.h>

// Include order matters: the 2.x visitor headers rely on the GEMM headers before them.
// clang-format off
#include "cute/tensor.hpp"
#include "cute/atom/mma_atom.hpp"
#include "cutlass/numeric_types.h"
#include "cutlass/cutlass.h"
#include "cutlass/gemm_coord.h"
#include "cutlass/arch/arch.h"
#include "cutlass/arch/mma.h"
#include "cutlass/float8.h"
#include "cutlass/gemm/device/gemm.h"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/epilogue/threadblock/fusion/visitors.hpp"
#include "cutlass/gemm/kernel/default_gemm_universal_with_visitor.h"
#include "cutlass/gemm/threadblock/threadblock_swizzle.h"
// clang-format on

#include "qengine/w8a8_gemm.h"
#include "qengine/cutlass_run.cuh"
#include "../kernels.h"

namespace qengine::sm80 {

using namespace cute;

// Kernel body only for __CUDA_ARCH__ >= kMinArch (mma.sync int8: 800, e4m3: 890). CUTLASS 2.x
// kernels are entered through the static invoke().
template <typename Kernel, int kMinArch>
struct ArchAtLeast : Kernel {
  template <typename... Args>
  CUTLASS_DEVICE static void invoke(Args&&... args) {
#if defined(__CUDA_ARCH__)
    if constexpr (__CUDA_ARCH__ >= kMinArch) Kernel::invoke(std::forward<Args>(args)...);
#endif
  }
};

template <typename ElementAB, typename ElementOut, typename TileShape, typename WarpShape, int kStages>
struct ScaledGemm {
  static constexpr bool kFP8 = !std::is_same_v<ElementAB, int8_t>;
  using ElementAcc = std::conditional_t<kFP8, float, int32_t>;
  using ArchTag = std::conditional_t<kFP8, cutlass::arch::Sm89, cutlass::arch::Sm80>;
  static constexpr int kMinArch = kFP8 ? 890 : 800;
  // FP8: fast accumulation (one fp32 accumulator set); the staged variant needs twice the
  // accumulator registers and spills at 64x64 warp tiles.
  using Operator = std::conditional_t<kFP8, cutlass::arch::OpMultiplyAddFastAccum, cutlass::arch::OpMultiplyAddSaturate>;
  using InstructionShape = cutlass::gemm::GemmShape<16, 8, 32>;
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

  using ThreadMap = cutlass::epilogue::threadblock::OutputTileThreadLayout<TileShape, WarpShape, float, 4, 1>;

  // out = a_scale[m] * (w_scale[n] * acc) + bias[n]
  using Acc = cutlass::epilogue::threadblock::VisitorAccFetch;
  using WScale = cutlass::epilogue::threadblock::VisitorRowBroadcast<ThreadMap, float, Stride<_0, _1, int32_t>>;
  using AScale = cutlass::epilogue::threadblock::VisitorColBroadcast<ThreadMap, float, Stride<_1, _0, int32_t>>;
  using Bias = cutlass::epilogue::threadblock::VisitorRowBroadcast<ThreadMap, ElementOut, Stride<_0, _1, int32_t>>;
  using MulW = cutlass::epilogue::threadblock::VisitorCompute<cutlass::multiplies, float, float, kRound>;
  using AccW = cutlass::epilogue::threadblock::Sm80EVT<MulW, WScale, Acc>;
  using FmaA = cutlass::epilogue::threadblock::VisitorCompute<cutlass::homogeneous_multiply_add, ElementOut, float, kRound>;
  using Compute = cutlass::epilogue::threadblock::Sm80EVT<FmaA, AScale, AccW, Bias>;
  using Store = cutlass::epilogue::threadblock::VisitorAuxStore<ThreadMap, ElementOut, kRound, Stride<int64_t, _1, int64_t>>;
  using EVT = cutlass::epilogue::threadblock::Sm80EVT<Store, Compute>;

  using KernelBase = typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
      ElementAB, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, 16,
      ElementAB, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, 16,
      float, cutlass::layout::RowMajor, 4,
      ElementAcc, float, cutlass::arch::OpClassTensorOp, ArchTag,
      TileShape, WarpShape, InstructionShape, EVT,
      cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<8>, kStages, Operator, 1>::GemmKernel;
  using Kernel = ArchAtLeast<KernelBase, kMinArch>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Gemm::Arguments arguments(const W8A8GemmParams& p) {
    typename EVT::Arguments evt{
        {
            {static_cast<const float*>(p.a_scale), 0.f, {}},                        // AScale
            {{static_cast<const float*>(p.w_scale), 0.f, {}}, {}, {}},              // AccW
            {static_cast<const ElementOut*>(p.bias), ElementOut(0.f), {}},         // Bias (nullptr -> 0)
            {}                                                                      // FmaA
        },
        {static_cast<ElementOut*>(p.out), {p.ldo, Int<1>{}, int64_t(0)}}};          // Store
    return typename Gemm::Arguments{
        cutlass::gemm::GemmUniversalMode::kGemm,
        cutlass::gemm::GemmCoord{p.M, p.N, p.K},
        1,
        evt,
        p.a, p.w, nullptr, nullptr,
        0, 0, 0, 0,
        p.lda, p.ldw, p.ldo, p.ldo};
  }

  static size_t workspace_bytes(const W8A8GemmParams& p) { return Gemm::get_workspace_size(arguments(p)); }

  static cudaError_t run(const W8A8GemmParams& p, cudaStream_t stream) {
    return run_cutlass_op<Gemm>(arguments(p), p, stream);
  }
};

template <W8A8TileConfig C> struct ConfigOf;
template <> struct ConfigOf<W8A8TileConfig::kSm80_32x64x128> {
  using Tile = cutlass::gemm::GemmShape<32, 64, 128>;
  using Warp = cutlass::gemm::GemmShape<16, 64, 64>;
  static constexpr int kStages = 5;  // 60 KB smem
};
template <> struct ConfigOf<W8A8TileConfig::kSm80_128x128x64> {
  using Tile = cutlass::gemm::GemmShape<128, 128, 64>;
  using Warp = cutlass::gemm::GemmShape<64, 64, 64>;
  static constexpr int kStages = 4;  // 64 KB smem: fits sm_86/sm_89 (99 KB) as well as sm_80
};

template <typename ElementAB, typename ElementOut, W8A8TileConfig C>
using GemmFor = ScaledGemm<ElementAB, ElementOut, typename ConfigOf<C>::Tile, typename ConfigOf<C>::Warp,
                           ConfigOf<C>::kStages>;

// Defines the entry points NAME_run / NAME_workspace (declared in ../kernels.h) for one
// (input type, config); both output types live in the same translation unit.
#define QENGINE_SM80_DEFINE(NAME, ELEMENT_AB, CONFIG)                                                      \
  cudaError_t NAME##_run(const W8A8GemmParams& p, cudaStream_t stream) {                                     \
    if (p.out_type == FloatType::kBF16) return GemmFor<ELEMENT_AB, cutlass::bfloat16_t, CONFIG>::run(p, stream); \
    if (p.out_type == FloatType::kFP16) return GemmFor<ELEMENT_AB, cutlass::half_t, CONFIG>::run(p, stream);     \
    return cudaErrorInvalidValue;                                                                              \
  }                                                                                                            \
  size_t NAME##_workspace(const W8A8GemmParams& p) {                                                          \
    if (p.out_type == FloatType::kBF16) return GemmFor<ELEMENT_AB, cutlass::bfloat16_t, CONFIG>::workspace_bytes(p); \
    return GemmFor<ELEMENT_AB, cutlass::half_t, CONFIG>::workspace_bytes(p);                                 \
  }

}  // namespace qengine::sm80
