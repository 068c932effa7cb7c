// SVDQuant low-rank up-projection as a CUTLASS sm90 epilogue visitor node (leaf of the EVT):
//
//   node(m, n) = sum_j lowrank_act[m, j] * lora_up[n, j]        (j < rank)
//
// so the GEMM's epilogue computes out = a_scale * (w_scale * acc) + (bias + node) in fp32 and
// rounds once, the same arithmetic as the reference (no 8-bit rounding of the low-rank terms).
//
// Tensor cores: the wgmma accumulator fragment of a warp is, per 16x8 block, exactly the C
// fragment of mma.sync m16n8k16 (lane = 4 g + t holds rows g, g + 8 and columns 2t, 2t + 1), so
// a warp computes the node's values for its blocks with mma.sync (bf16 operands, fp32 sums) and
// every lane gets the values of the very accumulators it holds. lowrank_act (fp32) is split into
// bf16 hi + lo parts (two MMAs: ~16 significant bits), lora_up is bf16 (exact for a bf16
// lora_up). Per 16x8 block and 16 ranks: one 16-byte load of lowrank_act per row pair and one
// 8-byte load of lora_up per lane (k is permuted identically in both operands, see mma_values).
// The first measurement (call 1, notes/kernels.md) used plain FMAs per output value (r FMAs and
// r/4 + r/8 loads each) and cost +160-195% at K = 3072: far more than a ping-pong mainloop hides.
// The layout is not assumed blindly: each epilogue subtile checks, from the coordinates the
// epilogue itself reports (args.tCcD, compile-time offsets after unrolling), that every value sits
// where the mma C fragment puts it, and otherwise takes the FMA path (correct for any layout).
// No shared memory (the mainloop keeps all its stages).
#pragma once

#include <cstdint>

#include <cuda_bf16.h>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"

namespace qengine::sm90 {

namespace lowrank_detail {
CUTLASS_DEVICE uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}
CUTLASS_DEVICE float bf16_round(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }
CUTLASS_DEVICE void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
}  // namespace lowrank_detail

struct Sm90LowRankUp {
  using ElementUp = cutlass::bfloat16_t;
  struct SharedStorage {};

  struct Arguments {
    const float* act = nullptr;     // lowrank_act [M, rank] fp32, row-major, contiguous
    const ElementUp* up = nullptr;  // lora_up [N, rank] bf16, row-major, contiguous
    int rank = 0;                   // multiple of 8 (16-byte loads); tensor cores for multiples of 16
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
    using ElementUp = Sm90LowRankUp::ElementUp;
    static CUTLASS_DEVICE uint32_t pack_bf16x2(float lo, float hi) { return lowrank_detail::pack_bf16x2(lo, hi); }
    static CUTLASS_DEVICE float bf16_round(float x) { return lowrank_detail::bf16_round(x); }
    static CUTLASS_DEVICE void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
      lowrank_detail::mma_bf16(c, a, b0, b1);
    }
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
      const int base_m = M - static_cast<int>(get<0>(residue));  // absolute coordinates of the first value
      const int base_n = N - static_cast<int>(get<1>(residue));
      int dm[kE], dn[kE];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        dm[i] = static_cast<int>(get<0>(c(i)));
        dn[i] = static_cast<int>(get<1>(c(i)));
      }
      if (mma_layout(dm, dn, base_m, base_n)) {
        mma_values(dm, dn, base_m, base_n);
      } else {
        fma_values(dm, dn, base_m, base_n);
      }
    }

    // Whether every value of this thread sits where the m16n8 C fragment of its lane puts it:
    // rows g or g + 8, columns 2t or 2t + 1 of a 16x8 block whose origin is the same for the
    // whole warp, and the block's (g, 2t) value is one of the thread's own ("leader"), so that
    // computing the leaders' blocks covers every value. Warp-uniform (__all_sync).
    template <int kE>
    CUTLASS_DEVICE bool mma_layout(const int (&dm)[kE], const int (&dn)[kE], int base_m, int base_n) const {
      const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
      const int warp_m = base_m - g, warp_n = base_n - 2 * t;
      bool ok = params.rank % 16 == 0 && (base_m & 15) == g && (base_n & 7) == 2 * t &&
                warp_m == __shfl_sync(0xffffffffu, warp_m, 0) && warp_n == __shfl_sync(0xffffffffu, warp_n, 0);
      CUTLASS_PRAGMA_UNROLL
      for (int j = 0; j < kE; ++j) {
        bool led = false;
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < kE; ++i)
          led |= (dm[i] & 15) == 0 && (dn[i] & 7) == 0 && dm[i] == (dm[j] & ~15) && dn[i] == (dn[j] & ~7);
        ok = ok && led && (dm[j] & 7) == 0 && (dn[j] & 7) <= 1;
      }
      return __all_sync(0xffffffffu, ok);
    }

    // C fragments of the thread's 16x8 blocks: block of leader i at absolute rows warp_m + dm[i]
    // (+ g, + g + 8), columns warp_n + dn[i] (+ 2t, + 2t + 1). k is permuted in both operands
    // alike: logical k 2t+e <-> physical 4t+e, logical 2t+8+e <-> 4t+2+e, so a lane's operands
    // are 4 consecutive ranks (one float4 per row of lowrank_act, 8 bytes of lora_up). k runs
    // outermost and 32 ranks' loads of every block are issued before their MMAs, so a subtile
    // pays about one L2 latency per 32 ranks (blocks of one row share their lowrank_act loads).
    // Rows/columns past the problem are clamped into it (their outputs are predicated off by the
    // epilogue's store; the loads stay in bounds).
    template <int kE>
    CUTLASS_DEVICE void mma_values(const int (&dm)[kE], const int (&dn)[kE], int base_m, int base_n) {
      const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
      const int warp_m = base_m - g, warp_n = base_n - 2 * t;
      const int rank = params.rank;
      bool leader[kE];
      const float* a_row_g[kE];
      const float* a_row_g8[kE];
      const ElementUp* u_row[kE];
      float acc[kE][4];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        leader[i] = (dm[i] & 15) == 0 && (dn[i] & 7) == 0;  // compile-time after unrolling
        a_row_g[i] = params.act + static_cast<int64_t>(min(warp_m + dm[i] + g, M - 1)) * rank + 4 * t;
        a_row_g8[i] = params.act + static_cast<int64_t>(min(warp_m + dm[i] + g + 8, M - 1)) * rank + 4 * t;
        u_row[i] = params.up + static_cast<int64_t>(min(warp_n + dn[i] + g, N - 1)) * rank + 4 * t;
        acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
      }
      for (int k0 = 0; k0 < rank; k0 += 32) {
        float4 x0[2][kE], x1[2][kE];
        uint2 u[2][kE];
        CUTLASS_PRAGMA_UNROLL
        for (int h = 0; h < 2; ++h) {
          const int k = min(k0 + 16 * h, rank - 16);  // rank % 32 == 16: the last half repeats, unused
          CUTLASS_PRAGMA_UNROLL
          for (int i = 0; i < kE; ++i) {
            if (!leader[i]) continue;
            x0[h][i] = __ldg(reinterpret_cast<const float4*>(a_row_g[i] + k));
            x1[h][i] = __ldg(reinterpret_cast<const float4*>(a_row_g8[i] + k));
            u[h][i] = __ldg(reinterpret_cast<const uint2*>(u_row[i] + k));
          }
        }
        CUTLASS_PRAGMA_UNROLL
        for (int h = 0; h < 2; ++h) {
          if (k0 + 16 * h >= rank) break;
          CUTLASS_PRAGMA_UNROLL
          for (int i = 0; i < kE; ++i) {
            if (!leader[i]) continue;
            float4 p0 = x0[h][i], p1 = x1[h][i];
            uint32_t a[4] = {pack_bf16x2(p0.x, p0.y), pack_bf16x2(p1.x, p1.y), pack_bf16x2(p0.z, p0.w),
                             pack_bf16x2(p1.z, p1.w)};
            mma_bf16(acc[i], a, u[h][i].x, u[h][i].y);
            // lo part: what the bf16 rounding of lowrank_act dropped (~16 significant bits in all).
            p0 = make_float4(p0.x - bf16_round(p0.x), p0.y - bf16_round(p0.y), p0.z - bf16_round(p0.z),
                             p0.w - bf16_round(p0.w));
            p1 = make_float4(p1.x - bf16_round(p1.x), p1.y - bf16_round(p1.y), p1.z - bf16_round(p1.z),
                             p1.w - bf16_round(p1.w));
            a[0] = pack_bf16x2(p0.x, p0.y);
            a[1] = pack_bf16x2(p1.x, p1.y);
            a[2] = pack_bf16x2(p0.z, p0.w);
            a[3] = pack_bf16x2(p1.z, p1.w);
            mma_bf16(acc[i], a, u[h][i].x, u[h][i].y);
          }
        }
      }
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        if (!leader[i]) continue;
        CUTLASS_PRAGMA_UNROLL
        for (int j = 0; j < kE; ++j)
          if ((dm[j] & ~15) == dm[i] && (dn[j] & ~7) == dn[i]) vals(j) = acc[i][((dm[j] & 8) ? 2 : 0) + (dn[j] & 1)];
      }
    }

    // Any layout: r FMAs per value from its own row of lowrank_act and column of lora_up.
    template <int kE>
    CUTLASS_DEVICE void fma_values(const int (&dm)[kE], const int (&dn)[kE], int base_m, int base_n) {
      const int rank = params.rank;
      float acc[kE];
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) acc[i] = 0.f;
      for (int k = 0; k < rank; k += 8) {
        CUTLASS_PRAGMA_UNROLL
        for (int i = 0; i < kE; ++i) {
          const int m = min(base_m + dm[i], M - 1), n = min(base_n + dn[i], N - 1);
          const float4* a = reinterpret_cast<const float4*>(params.act + static_cast<int64_t>(m) * rank + k);
          const float4 a0 = __ldg(a), a1 = __ldg(a + 1);
          const uint4 u = __ldg(reinterpret_cast<const uint4*>(params.up + static_cast<int64_t>(n) * rank + k));
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
