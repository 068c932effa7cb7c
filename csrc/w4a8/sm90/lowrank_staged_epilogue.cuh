// SVDQuant low-rank up-projection inside the W4A8 cooperative epilogue, operands staged in shared
// memory once per tile (an EVT leaf node):
//
//   node(row, col) = sum_j lora_up[row, j] * lowrank_act[col, j]      (j < rank <= kMaxRank)
//
// in the kernel's transposed view (rows = output channels n, columns = tokens m).
//
// Why not the [M, N] product as the epilogue's C operand (the path this replaces for rank <= 32):
// the cooperative kernel's two warp groups both run the epilogue, so nothing hides it, and the
// product costs one [M, N] write (cuBLAS) and one read (TMA): 252 -> 352 us at FLUX
// 4608x3072->12288 (notes/w4a8.md). Why not the W8A8 node (csrc/w8a8_gemm/sm90/lowrank_epilogue.cuh),
// which loads its operands from global memory per epilogue subtile: it measured +40% to +116%
// there (one dependent L2 round trip per subtile, 8 per tile).
//
// Here, at the start of each tile's epilogue (`begin`), the consumer threads copy the tile's
// lora_up rows (kRows x rank, 16-bit) and lowrank_act rows (kCols x rank, fp32 rounded to the
// 16-bit output type, as the product path rounded it) into shared memory, all loads in flight at
// once: one L2 round trip per tile. The collective epilogue's barrier after `begin` publishes
// them (begin_sync_needed). Each subtile then takes its values from mma.sync m16n8k16 with
// fragments read from shared memory: the wgmma accumulator fragment of a warp is, per 16x8 block,
// the C fragment of m16n8 (lane 4g + t holds rows g, g + 8 and columns 2t, 2t + 1), so every lane
// gets the values of the accumulators it holds. Rows are padded to kMaxRank + 8 elements, which
// makes the 32-bit fragment loads of 8 rows x 4 lanes hit 32 distinct banks. As in the W8A8 node,
// each subtile checks the layout it is given (qengine/mma_c_fragment.cuh, warp-uniform) and
// otherwise sums with FMAs from the same shared-memory rows, so correctness does not rest on the
// layout assumption.
// Overwriting the buffers in the next tile's `begin` is safe: every subtile's TMA store ends with
// a barrier of all consumer threads, after their last read of the buffers.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"
#include "cutlass/numeric_types.h"
#include "qengine/mma_c_fragment.cuh"

namespace qengine::w4a8::sm90 {

namespace staged_detail {
template <class E>
CUTLASS_DEVICE uint32_t pack2(float lo, float hi) {
  if constexpr (cute::is_same_v<E, cutlass::half_t>) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  } else {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
}
template <class E>
CUTLASS_DEVICE float to_float(uint16_t bits) {
  if constexpr (cute::is_same_v<E, cutlass::half_t>) {
    return __half2float(__ushort_as_half(bits));
  } else {
    return __bfloat162float(__ushort_as_bfloat16(bits));
  }
}
template <class E>
CUTLASS_DEVICE void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (cute::is_same_v<E, cutlass::half_t>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}
}  // namespace staged_detail

template <class CtaTileShapeMNK, class ElementOp, int kMaxRank>
struct Sm90LowRankStaged {
  static_assert(kMaxRank % 16 == 0, "ranks come in k16 steps of mma.sync");
  static constexpr int kRows = cute::size<0>(CtaTileShapeMNK{});
  static constexpr int kCols = cute::size<1>(CtaTileShapeMNK{});
  static constexpr int kStride = kMaxRank + 8;  // elements per staged row (+16 bytes: no bank conflicts)

  struct SharedStorage {
    alignas(16) uint16_t up[kRows * kStride];
    alignas(16) uint16_t act[kCols * kStride];
  };

  struct Arguments {
    const float* act = nullptr;     // lowrank_act [tokens, rank] fp32, row-major, 16-byte aligned
    const ElementOp* up = nullptr;  // lora_up [channels, rank] in the output type, row-major, 16-byte aligned
    int rank = 0;                   // multiple of 16, <= kMaxRank
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const& args) {
    return args.act != nullptr && args.up != nullptr && args.rank > 0 && args.rank % 16 == 0 &&
           args.rank <= kMaxRank && reinterpret_cast<uintptr_t>(args.act) % 16 == 0 &&
           reinterpret_cast<uintptr_t>(args.up) % 16 == 0;
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

  CUTLASS_HOST_DEVICE Sm90LowRankStaged() {}
  CUTLASS_HOST_DEVICE Sm90LowRankStaged(Params const& params, SharedStorage const& storage)
      : params(params), smem_up(const_cast<uint16_t*>(storage.up)), smem_act(const_cast<uint16_t*>(storage.act)) {}

  Params params;
  uint16_t* smem_up = nullptr;
  uint16_t* smem_act = nullptr;

  template <class... Args>
  CUTLASS_DEVICE auto get_producer_load_callbacks(cutlass::epilogue::fusion::detail::ProducerLoadArgs<Args...> const&) {
    return cutlass::epilogue::fusion::detail::EmptyProducerLoadCallbacks{};
  }

  template <int kThreads, class CTensor, class ThrResidue, class RTensor>
  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::detail::EmptyConsumerStoreCallbacks {
    CUTLASS_DEVICE ConsumerStoreCallbacks(CTensor tCcD_, ThrResidue residue_, RTensor vals_, Params const& params_,
                                          uint16_t* smem_up_, uint16_t* smem_act_, int rows_, int cols_, int row0_,
                                          int col0_, int thread_idx_)
        : tCcD(tCcD_), residue(residue_), vals(vals_), params(params_), smem_up(smem_up_), smem_act(smem_act_),
          rows(rows_), cols(cols_), row0(row0_), col0(col0_), thread_idx(thread_idx_) {}

    CTensor tCcD;        // (CPY,CPY_M,CPY_N,EPI_M,EPI_N) coordinates relative to the thread's first value
    ThrResidue residue;  // (rows, cols) minus the coordinates of the thread's first value
    RTensor vals;        // (CPY,CPY_M,CPY_N) the node's values for the current epilogue subtile
    Params const& params;
    uint16_t* smem_up;
    uint16_t* smem_act;
    int rows, cols;      // problem extent in the kernel's view (channels, tokens)
    int row0, col0;      // the tile's origin
    int thread_idx;      // among the kThreads consumer threads

    // Copies the tile's operands into shared memory (zeros past the problem's edge), every load
    // issued before the first store.
    CUTLASS_DEVICE void begin() {
      a_row = -1;
      const int rank = params.rank;
      const int vecs = rank / 8;  // 16-byte vectors (8 values) per row
      constexpr int kUpIters = (kRows * kMaxRank / 8 + kThreads - 1) / kThreads;
      constexpr int kActIters = (kCols * kMaxRank / 8 + kThreads - 1) / kThreads;
      uint4 up_v[kUpIters];
      float4 act_v[kActIters][2];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kUpIters; ++i) {
        const int v = thread_idx + i * kThreads, r = v / vecs, c = (v % vecs) * 8;
        up_v[i] = make_uint4(0, 0, 0, 0);
        if (r < kRows && row0 + r < rows)
          up_v[i] = __ldg(reinterpret_cast<const uint4*>(params.up + static_cast<int64_t>(row0 + r) * rank + c));
      }
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kActIters; ++i) {
        const int v = thread_idx + i * kThreads, r = v / vecs, c = (v % vecs) * 8;
        act_v[i][0] = act_v[i][1] = make_float4(0.f, 0.f, 0.f, 0.f);
        if (r < kCols && col0 + r < cols) {
          const float4* src = reinterpret_cast<const float4*>(params.act + static_cast<int64_t>(col0 + r) * rank + c);
          act_v[i][0] = __ldg(src);
          act_v[i][1] = __ldg(src + 1);
        }
      }
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kUpIters; ++i) {
        const int v = thread_idx + i * kThreads, r = v / vecs, c = (v % vecs) * 8;
        if (r < kRows) *reinterpret_cast<uint4*>(smem_up + r * kStride + c) = up_v[i];
      }
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kActIters; ++i) {
        const int v = thread_idx + i * kThreads, r = v / vecs, c = (v % vecs) * 8;
        if (r < kCols) {
          const float4 x = act_v[i][0], y = act_v[i][1];
          *reinterpret_cast<uint4*>(smem_act + r * kStride + c) =
              make_uint4(staged_detail::pack2<ElementOp>(x.x, x.y), staged_detail::pack2<ElementOp>(x.z, x.w),
                         staged_detail::pack2<ElementOp>(y.x, y.y), staged_detail::pack2<ElementOp>(y.z, y.w));
        }
      }
    }

    CUTLASS_DEVICE bool begin_sync_needed() const { return true; }

    CUTLASS_DEVICE void begin_loop(int epi_m, int epi_n) {
      using namespace cute;
      Tensor c = tCcD(_, _, _, epi_m, epi_n);
      constexpr int kE = decltype(size(c))::value;
      // Tile-relative coordinates of the thread's first value.
      const int base_r = rows - static_cast<int>(get<0>(residue)) - row0;
      const int base_c = cols - static_cast<int>(get<1>(residue)) - col0;
      int dr[kE], dc[kE];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        dr[i] = static_cast<int>(get<0>(c(i)));
        dc[i] = static_cast<int>(get<1>(c(i)));
      }
      if (qengine::sm90::mma_c_fragment_layout(dr, dc, base_r, base_c)) {
        mma_values(dr, dc, base_r, base_c);
      } else {
        fma_values(dr, dc, base_r, base_c);
      }
    }

    CUTLASS_DEVICE uint32_t lds32(const uint16_t* base, int row, int k) const {
      return *reinterpret_cast<const uint32_t*>(base + row * kStride + k);
    }

    // lora_up fragments (mma A operand) of the 16-row block the warp's values lie in, kept in
    // registers from subtile to subtile: in the cooperative 128x32 subtiles a warp's rows are the
    // same for the whole tile (call 2 of the eighteenth session: reloading them per 16x8 block
    // was 60% of the node's shared-memory loads). a_row = the cached block's first row (lane's
    // row g), -1 after begin() staged a new tile.
    uint32_t a_frag[kMaxRank / 16][4];
    int a_row = -1;

    CUTLASS_DEVICE void load_a(int r) {
      const int t = (threadIdx.x % 32) % 4;
      CUTLASS_PRAGMA_UNROLL
      for (int s = 0; s < kMaxRank / 16; ++s) {
        if (16 * s >= params.rank) break;
        a_frag[s][0] = lds32(smem_up, r, 16 * s + 2 * t);
        a_frag[s][1] = lds32(smem_up, r + 8, 16 * s + 2 * t);
        a_frag[s][2] = lds32(smem_up, r, 16 * s + 2 * t + 8);
        a_frag[s][3] = lds32(smem_up, r + 8, 16 * s + 2 * t + 8);
      }
      a_row = r;
    }

    template <int kE>
    CUTLASS_DEVICE void mma_values(const int (&dr)[kE], const int (&dc)[kE], int base_r, int base_c) {
      const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
      const int warp_r = base_r - g, warp_c = base_c - 2 * t;
      const int rank = params.rank;
      // Whether all of the thread's blocks share one 16-row block (compile-time after unrolling).
      int dr0 = -1;
      bool one_row_block = true;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        if (!qengine::sm90::mma_c_leader(dr[i], dc[i])) continue;
        if (dr0 < 0) dr0 = dr[i];
        one_row_block = one_row_block && dr[i] == dr0;
      }
      float acc[kE][4];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
        if (!qengine::sm90::mma_c_leader(dr[i], dc[i])) continue;  // compile-time after unrolling
        const int r = warp_r + dr[i] + g, col = warp_c + dc[i] + g;
        if (!one_row_block || r != a_row) load_a(r);
        CUTLASS_PRAGMA_UNROLL
        for (int s = 0; s < kMaxRank / 16; ++s) {
          if (16 * s >= rank) break;
          staged_detail::mma16816<ElementOp>(acc[i], a_frag[s], lds32(smem_act, col, 16 * s + 2 * t),
                                             lds32(smem_act, col, 16 * s + 2 * t + 8));
        }
      }
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i)
        if (qengine::sm90::mma_c_leader(dr[i], dc[i])) qengine::sm90::mma_c_scatter(dr, dc, i, acc[i], vals);
    }

    // Any layout: rank FMAs per value from the staged rows.
    template <int kE>
    CUTLASS_DEVICE void fma_values(const int (&dr)[kE], const int (&dc)[kE], int base_r, int base_c) {
      const int rank = params.rank;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        const uint16_t* u = smem_up + (base_r + dr[i]) * kStride;
        const uint16_t* x = smem_act + (base_c + dc[i]) * kStride;
        float s = 0.f;
        for (int k = 0; k < rank; ++k)
          s = fmaf(staged_detail::to_float<ElementOp>(u[k]), staged_detail::to_float<ElementOp>(x[k]), s);
        vals(i) = s;
      }
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
    auto [m, n, k, l] = args.tile_coord_mnkl;
    constexpr int kThreads = decltype(size(args.tiled_copy))::value;
    Tensor vals = make_tensor<float>(take<0, 3>(shape(args.tCcD)));  // (CPY,CPY_M,CPY_N)
    return ConsumerStoreCallbacks<kThreads, decltype(args.tCcD), decltype(args.residue_tCcD), decltype(vals)>(
        args.tCcD, args.residue_tCcD, vals, params, smem_up, smem_act, static_cast<int>(M), static_cast<int>(N),
        static_cast<int>(m) * kRows, static_cast<int>(n) * kCols, args.thread_idx);
  }
};

}  // namespace qengine::w4a8::sm90
