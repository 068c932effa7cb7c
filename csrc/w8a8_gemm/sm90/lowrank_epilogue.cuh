// SVDQuant low-rank up-projection as a CUTLASS sm90 epilogue visitor node (leaf of the EVT):
//
//   node(m, n) = sum_j lowrank_act[m, j] * lora_up[n, j]        (fp32 FMAs, j < rank)
//
// so the GEMM's epilogue computes out = a_scale * (w_scale * acc) + (bias + node) in fp32 and
// rounds once, the same arithmetic as the reference (no 8-bit rounding of the low-rank terms).
//
// Why CUDA-core FMAs in the epilogue and not a second MMA: with the ping-pong kernel one consumer
// warpgroup runs its epilogue while the other runs its mainloop on the tensor cores, so epilogue
// arithmetic is free as long as it takes less time than one tile's mainloop (128x128 tile,
// K = 3072 fp8: ~9 us per tile at 1.4 PFLOPS / 132 SMs; rank 32 costs 4096 FMAs per thread per
// tile, ~2-3 us of issue). The node needs no shared memory (the mainloop keeps all its stages)
// and no assumption about how the accumulators are laid out: each value is computed for the
// coordinates the epilogue itself reports (args.tCcD), so it is correct for every tile config.
// Per epilogue subtile (begin_loop), a thread computes all of its values at once, k outermost, so
// a lowrank_act row or a lora_up row that several of its values share is loaded once per k step
// (the coordinate offsets are compile-time constants after unrolling: the compiler merges them).
#pragma once

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"

namespace qengine::sm90 {

template <class ElementUp>  // cutlass::bfloat16_t or cutlass::half_t
struct Sm90LowRankUp {
  struct SharedStorage {};

  struct Arguments {
    const float* act = nullptr;     // lowrank_act [M, rank] fp32, row-major, contiguous
    const ElementUp* up = nullptr;  // lora_up [N, rank], row-major, contiguous
    int rank = 0;                   // multiple of 8 (16-byte loads)
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const& args) {
    return args.act != nullptr && args.up != nullptr && args.rank > 0 && args.rank % 8 == 0;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }

  CUTLASS_DEVICE bool is_producer_load_needed() const { return false; }
  CUTLASS_DEVICE bool is_C_load_needed() const { return false; }
  CUTLASS_DEVICE bool is_zero() const { return false; }

  CUTLASS_HOST_DEVICE Sm90LowRankUp() {}
  CUTLASS_HOST_DEVICE Sm90LowRankUp(Params const& params, SharedStorage const&) : params(params) {}

  Params params;

  template <class... Args>
  CUTLASS_DEVICE auto get_producer_load_callbacks(cutlass::epilogue::fusion::detail::ProducerLoadArgs<Args...> const&) {
    return cutlass::epilogue::fusion::detail::EmptyProducerLoadCallbacks{};
  }

  template <class CTensor, class ThrResidue, class RTensor>
  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::detail::EmptyConsumerStoreCallbacks {
    CUTLASS_DEVICE ConsumerStoreCallbacks(CTensor tCcD_, ThrResidue residue_, RTensor vals_, Params const& params_,
                                          int M_, int N_)
        : tCcD(tCcD_), residue(residue_), vals(vals_), params(params_), M(M_), N(N_) {}

    CTensor tCcD;          // (CPY,CPY_M,CPY_N,EPI_M,EPI_N) coordinates relative to the thread's first value
    ThrResidue residue;    // (M, N) minus the coordinates of the thread's first value
    RTensor vals;          // (CPY,CPY_M,CPY_N) the node's values for the current epilogue subtile
    Params const& params;
    int M, N;

    CUTLASS_DEVICE void begin_loop(int epi_m, int epi_n) {
      using namespace cute;
      Tensor c = tCcD(_, _, _, epi_m, epi_n);
      constexpr int kE = decltype(size(c))::value;
      // Absolute row/column of every value; rows/columns past the problem are clamped into it
      // (their outputs are predicated off by the epilogue's store, the loads stay in bounds).
      const int base_m = M - static_cast<int>(get<0>(residue));
      const int base_n = N - static_cast<int>(get<1>(residue));
      int rows[kE], cols[kE];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        rows[i] = min(base_m + static_cast<int>(get<0>(c(i))), M - 1);
        cols[i] = min(base_n + static_cast<int>(get<1>(c(i))), N - 1);
      }
      float acc[kE];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) acc[i] = 0.f;
      const int rank = params.rank;
      const float* __restrict__ act = params.act;
      const ElementUp* __restrict__ up = params.up;
      for (int k = 0; k < rank; k += 8) {
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < kE; ++i) {
          const float4* a = reinterpret_cast<const float4*>(act + static_cast<int64_t>(rows[i]) * rank + k);
          const float4 a0 = __ldg(a), a1 = __ldg(a + 1);
          const uint4 u = __ldg(reinterpret_cast<const uint4*>(up + static_cast<int64_t>(cols[i]) * rank + k));
          const ElementUp* w = reinterpret_cast<const ElementUp*>(&u);
          acc[i] = fmaf(a0.x, float(w[0]), acc[i]);
          acc[i] = fmaf(a0.y, float(w[1]), acc[i]);
          acc[i] = fmaf(a0.z, float(w[2]), acc[i]);
          acc[i] = fmaf(a0.w, float(w[3]), acc[i]);
          acc[i] = fmaf(a1.x, float(w[4]), acc[i]);
          acc[i] = fmaf(a1.y, float(w[5]), acc[i]);
          acc[i] = fmaf(a1.z, float(w[6]), acc[i]);
          acc[i] = fmaf(a1.w, float(w[7]), acc[i]);
        }
      }
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) vals(i) = acc[i];
    }

    template <typename ElementAccumulator, int FragmentSize>
    CUTLASS_DEVICE cutlass::Array<float, FragmentSize> visit(cutlass::Array<ElementAccumulator, FragmentSize> const&,
                                                            int epi_v, int, int) {
      cutlass::Array<float, FragmentSize> out;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < FragmentSize; ++i) out[i] = vals(epi_v * FragmentSize + i);
      return out;
    }
  };

  template <bool ReferenceSrc, class... Args>
  CUTLASS_DEVICE auto get_consumer_store_callbacks(cutlass::epilogue::fusion::detail::ConsumerStoreArgs<Args...> const& args) {
    using namespace cute;
    auto [M, N, K, L] = args.problem_shape_mnkl;
    Tensor vals = make_tensor<float>(take<0, 3>(shape(args.tCcD)));  // (CPY,CPY_M,CPY_N)
    return ConsumerStoreCallbacks<decltype(args.tCcD), decltype(args.residue_tCcD), decltype(vals)>(
        args.tCcD, args.residue_tCcD, vals, params, static_cast<int>(M), static_cast<int>(N));
  }
};

}  // namespace qengine::sm90
