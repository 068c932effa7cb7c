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
// The epilogue's producer-load warp stages each tile's lora_up rows (kRows x rank) and lowrank_act
// rows (kCols x rank, both 16-bit: the binding rounds lowrank_act to the output type, as the
// product path rounds it) into shared memory with cp.async, in wgmma's K-major "interleave" layout
// (8 rows x 16 bytes per core matrix). That warp runs ahead of the consumers, so the copies overlap
// the tile's mainloop: when the consumers' epilogue starts, the rows are there. (Staged by the
// consumers themselves at the start of each tile's epilogue, the L2 round trip sat on the critical
// path: ~11% of the kernel, ncu in the nineteenth session.) Hand-offs:
//   full:  the producer waits for its copies, fences them for the async proxy, then commits the
//          tile's first epilogue-load stage; the consumers' wait on that stage (before `previsit`)
//          is the wait for the rows.
//   empty: one buffer, so the producer may overwrite it for tile t+1 only when the consumers are
//          done reading tile t: they arrive on a named barrier after the last subtile's wgmma, and
//          the producer syncs on it before staging any tile but its first. (The consumers' arrival
//          after the CTA's last tile has no partner and is left pending when the CTA exits, as
//          FlashAttention-3's warp-scheduler barriers are.)
//
// Each epilogue subtile (128 rows x kEpiN tokens) is then one warpgroup MMA per warp group and 16
// of rank: wgmma m64 x kEpiN x k16, both operands from shared memory, fp32 result in registers.
// Each subtile's MMA is issued during the previous subtile (after its values are read off), so
// its latency overlaps that subtile's conversion and store; only the tile's first one is waited
// for right away.
// That result's fragment is the accumulator's own (a warp holds rows 16w + g and 16w + g + 8,
// columns 8j + 2t and 8j + 2t + 1), so each thread reads off the values it needs. (The
// eighteenth session's node ran mma.sync m16n8k16 per 16x8 block with fragments loaded by hand;
// this one is 0-3% faster, notes/w4a8.md.) Each thread checks that the epilogue put its values
// where the fragment has them and traps otherwise: the layout is fixed by the tile config, so a
// config that broke it fails its first test instead of computing wrong values. (An FMA fallback
// inlined into every subtile was ~2,000 SASS instructions per subtile that never ran, and its
// instruction-cache misses cost ~5% of the kernel: ncu, nineteenth session.)
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "cute/arch/mma_sm90.hpp"
#include "cute/atom/mma_atom.hpp"
#include "cute/atom/mma_traits_sm90_gmma.hpp"
#include "cute/tensor.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"
#include "cutlass/numeric_types.h"

namespace qengine::w4a8::sm90 {

template <class CtaTileShapeMNK, class ElementOp, int kMaxRank>
struct Sm90LowRankStaged {
  static_assert(kMaxRank % 16 == 0, "ranks come in k16 steps of the MMA");
  static constexpr int kRows = cute::size<0>(CtaTileShapeMNK{});
  static constexpr int kCols = cute::size<1>(CtaTileShapeMNK{});
  static_assert(kRows % 64 == 0 && kCols % 8 == 0, "the tile is a whole number of wgmma row blocks");

  // wgmma's K-major interleave layout: core matrices of 8 rows x 8 values (16 bytes), rows first.
  using SmemAtom = cute::SM90::GMMA::Layout_K_INTER_Atom<ElementOp>;
  using UpLayout = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kRows>, cute::Int<kMaxRank>>{}));
  using ActLayout = decltype(cute::tile_to_shape(SmemAtom{}, cute::Shape<cute::Int<kCols>, cute::Int<kMaxRank>>{}));
  // Element offset of (row, k) in a buffer of kR rows; the stores in `begin` use it, the wgmma
  // descriptors come from the cute layouts above (checked equal below).
  template <int kR>
  static constexpr CUTLASS_HOST_DEVICE int offset(int r, int k) {
    return (r % 8) * 8 + (k % 8) + (r / 8) * 64 + (k / 8) * (kR / 8) * 64;
  }
  static_assert(UpLayout{}.layout_b()(9, 17) == offset<kRows>(9, 17) &&
                    UpLayout{}.layout_b()(kRows - 1, kMaxRank - 1) == offset<kRows>(kRows - 1, kMaxRank - 1) &&
                    ActLayout{}.layout_b()(kCols - 3, 8) == offset<kCols>(kCols - 3, 8),
                "offset() must match the interleave layout the wgmma descriptors describe");

  struct SharedStorage {
    alignas(128) uint16_t up[kRows * kMaxRank];
    alignas(128) uint16_t act[kCols * kMaxRank];
  };

  struct Arguments {
    const ElementOp* act = nullptr;  // lowrank_act [tokens, rank] in the output type, row-major, 16-byte aligned
    const ElementOp* up = nullptr;   // lora_up [channels, rank] in the output type, row-major, 16-byte aligned
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

  // The producer-load warp stages the rows (the epilogue's C operand is void, so it loads nothing else).
  CUTLASS_DEVICE bool is_producer_load_needed() const { return true; }
  CUTLASS_DEVICE bool is_C_load_needed() const { return false; }
  CUTLASS_DEVICE bool is_zero() const { return false; }

  CUTLASS_HOST_DEVICE Sm90LowRankStaged() {}
  CUTLASS_HOST_DEVICE Sm90LowRankStaged(Params const& params, SharedStorage const& storage)
      : params(params), smem_up(const_cast<uint16_t*>(storage.up)), smem_act(const_cast<uint16_t*>(storage.act)) {}

  Params params;
  uint16_t* smem_up = nullptr;
  uint16_t* smem_act = nullptr;
  // Tiles this thread's producer-load warp has staged: each node object lives in one role's
  // collective epilogue for the whole kernel.
  mutable int staged_tiles = 0;

  // The named barrier the consumers arrive on when done reading a tile's rows ("empty" above);
  // the first one CUTLASS leaves to kernels, unused by the cooperative kernel and its mainloop.
  static constexpr uint32_t kEmptyBarrier = 0;
  static constexpr uint32_t kEmptyThreads = 256 + 32;  // two consumer warp groups + the producer-load warp

  // Index within the rows of the 8-value chunk that thread `idx` of kT stages in step i: eight
  // consecutive threads take one chunk of eight consecutive rows, one 128-byte core-matrix row
  // block of the interleave layout (no bank conflicts), and a warp reads four chunks of eight
  // whole rows from global memory.
  template <int kT>
  static CUTLASS_DEVICE void chunk(int idx, int i, int rank, int& r, int& c) {
    const int vecs = rank / 8, j = idx + i * kT, q = j / 8;
    r = (q / vecs) * 8 + j % 8;
    c = (q % vecs) * 8;
  }

  struct ProducerLoadCallbacks : cutlass::epilogue::fusion::detail::EmptyProducerLoadCallbacks {
    Params const& params;
    uint16_t* smem_up;
    uint16_t* smem_act;
    int rows, cols;  // problem extent in the kernel's view (channels, tokens)
    int row0, col0;  // the tile's origin
    int lane;
    bool first_tile;

    CUTLASS_DEVICE ProducerLoadCallbacks(Params const& params_, uint16_t* smem_up_, uint16_t* smem_act_, int rows_,
                                         int cols_, int row0_, int col0_, int lane_, bool first_tile_)
        : params(params_), smem_up(smem_up_), smem_act(smem_act_), rows(rows_), cols(cols_), row0(row0_),
          col0(col0_), lane(lane_), first_tile(first_tile_) {}

    // Copies kR rows (row-major, rank 16-bit values each) into the interleave layout with 16-byte
    // cp.async; rows past the problem's edge are zero-filled.
    template <int kR>
    CUTLASS_DEVICE void copy_rows(const ElementOp* src, int first, int limit, uint16_t* dst) const {
      const int steps = (kR * params.rank / 8 + 31) / 32;
      CUTLASS_PRAGMA_NO_UNROLL
      for (int i = 0; i < steps; ++i) {
        int r, c;
        chunk<32>(lane, i, params.rank, r, c);
        if (r < kR) {
          const bool inside = first + r < limit;
          const ElementOp* from = inside ? src + static_cast<int64_t>(first + r) * params.rank + c : src;
          const uint32_t to = cute::cast_smem_ptr_to_uint(dst + offset<kR>(r, c));
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(from), "r"(inside ? 16 : 0)
                       : "memory");
        }
      }
    }

    // Before the tile's first epilogue-load stage is committed (which tells the consumers the rows are in).
    CUTLASS_DEVICE void begin() {
      if (!first_tile) cutlass::arch::NamedBarrier::sync(kEmptyThreads, kEmptyBarrier);
      copy_rows<kRows>(params.up, row0, rows, smem_up);
      copy_rows<kCols>(params.act, col0, cols, smem_act);
      asm volatile("cp.async.wait_all;\n" ::: "memory");
      cutlass::arch::fence_view_async_shared();  // the copies (generic proxy), before wgmma reads them
    }
  };

  template <class... Args>
  CUTLASS_DEVICE auto get_producer_load_callbacks(
      cutlass::epilogue::fusion::detail::ProducerLoadArgs<Args...> const& args) const {
    auto [M, N, K, L] = args.problem_shape_mnkl;
    auto [m, n, k, l] = args.tile_coord_mnkl;
    return ProducerLoadCallbacks(params, smem_up, smem_act, static_cast<int>(M), static_cast<int>(N),
                                 static_cast<int>(m) * kRows, static_cast<int>(n) * kCols, args.thread_idx,
                                 staged_tiles++ == 0);
  }

  template <int kThreads, int kEpiM, int kEpiN, class CTensor, class ThrResidue, class RTensor>
  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::detail::EmptyConsumerStoreCallbacks {
    // Two warp groups of 64 rows each cover a 128-row subtile: the cooperative schedule.
    static_assert(kThreads == 256 && kEpiM == 128 && kRows % kEpiM == 0,
                  "the staged low-rank node serves the cooperative (two warp group, 128-row) epilogue");
    static_assert(kEpiN % 8 == 0 && kEpiN <= 256 && kCols % kEpiN == 0, "wgmma N: a multiple of 8 up to 256");
    using WgOp = decltype(cute::SM90::GMMA::ss_op_selector<ElementOp, ElementOp, float,
                                                            cute::Shape<cute::_64, cute::Int<kEpiN>, cute::_16>,
                                                            cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>());
    using WgMma = decltype(cute::make_tiled_mma(WgOp{}));

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

    static constexpr int kSubM = kRows / kEpiM, kSubN = kCols / kEpiN;  // subtiles, visited epi_n-major
    using Frag = decltype(cute::partition_fragment_C(WgMma{}, cute::Shape<cute::_64, cute::Int<kEpiN>>{}));
    // The results of the even- and odd-numbered subtiles: the next subtile's MMA runs while this
    // one's values go through the rest of the epilogue.
    Frag d_even, d_odd;

    // Starts this warp group's MMA for subtile (epi_m, epi_n): 64 rows x kEpiN tokens x rank.
    CUTLASS_DEVICE void issue(int epi_m, int epi_n, Frag& d) const {
      using namespace cute;
      const int blk_r = epi_m * kEpiM + 64 * (thread_idx / 128);  // tile-relative first row
      WgMma mma;
      Tensor s_up = make_tensor(make_smem_ptr(reinterpret_cast<ElementOp*>(smem_up)), UpLayout{});
      Tensor s_act = make_tensor(make_smem_ptr(reinterpret_cast<ElementOp*>(smem_act)), ActLayout{});
      Tensor s_a = local_tile(s_up, Shape<_64, Int<kMaxRank>>{}, make_coord(blk_r / 64, 0));
      Tensor s_b = local_tile(s_act, Shape<Int<kEpiN>, Int<kMaxRank>>{}, make_coord(epi_n, 0));
      auto thr = mma.get_slice(thread_idx % 128);
      Tensor t_a = thr.make_fragment_A(thr.partition_A(s_a));  // (MMA, 1, kMaxRank / 16) descriptors
      Tensor t_b = thr.make_fragment_B(thr.partition_B(s_b));
      warpgroup_fence_operand(d);
      warpgroup_arrive();
      mma.accumulate_ = SM90::GMMA::ScaleOut::Zero;
      CUTLASS_PRAGMA_UNROLL
      for (int s = 0; s < kMaxRank / 16; ++s) {
        if (16 * s < params.rank) {
          cute::gemm(mma, t_a(_, _, s), t_b(_, _, s), d);
          mma.accumulate_ = SM90::GMMA::ScaleOut::One;
        }
      }
      warpgroup_commit_batch();
    }

    // The rows are staged by the producer-load warp; the wait for them is the collective's wait
    // on the first epilogue-load stage, before `previsit`.
    CUTLASS_DEVICE void previsit(int epi_m, int epi_n, int, bool) {
      using namespace cute;
      const int idx = epi_n * kSubM + epi_m;  // compile-time once the subtile loops are unrolled
      Frag& d = idx % 2 == 0 ? d_even : d_odd;
      if (idx == 0) issue(epi_m, epi_n, d);
      warpgroup_wait<0>();
      warpgroup_fence_operand(d);
      if (idx == kSubM * kSubN - 1) {
        // The tile's last subtile has read the rows: the producer may stage the next tile's.
        cutlass::arch::NamedBarrier::arrive(kEmptyThreads, kEmptyBarrier);
      } else {
        issue((idx + 1) % kSubM, (idx + 1) / kSubM, idx % 2 == 0 ? d_odd : d_even);
      }
      const int wg = thread_idx / 128;
      // Where the epilogue put this thread's values against where the fragment has them. The
      // coordinates are offsets from the thread's first value of the tile (compile-time after
      // unrolling; minus the subtile's origin: rr, cc); value i of d lies at row g + 8 * ((i / 2) % 2),
      // column 2t + (i % 2) + 8 * (i / 4) of the warp's 16-row block of the subtile.
      Tensor c = tCcD(_, _, _, epi_m, epi_n);
      constexpr int kE = decltype(size(c))::value;
      const int base_r = rows - static_cast<int>(get<0>(residue)) - row0;
      const int base_c = cols - static_cast<int>(get<1>(residue)) - col0;
      int rr[kE], cc[kE];  // minus the subtile's origin
      bool fragment_layout = true;
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) {
        rr[i] = static_cast<int>(get<0>(c(i))) - epi_m * kEpiM;
        cc[i] = static_cast<int>(get<1>(c(i))) - epi_n * kEpiN;
        fragment_layout = fragment_layout && (rr[i] == 0 || rr[i] == 8) && (cc[i] & 7) <= 1 && cc[i] >= 0 &&
                          cc[i] < kEpiN;
      }
      const int lane = threadIdx.x % 32, w = (thread_idx % 128) / 32;
      fragment_layout = fragment_layout && base_r == 64 * wg + 16 * w + lane / 4 && base_c == 2 * (lane % 4);
      if (!fragment_layout) __trap();  // a tile config whose epilogue layout is not the fragment's
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < kE; ++i) vals(i) = d((cc[i] & 1) + 2 * (rr[i] / 8) + 4 * (cc[i] / 8));
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
    constexpr int kEpiM = decltype(size<0>(args.epi_tile))::value;
    constexpr int kEpiN = decltype(size<1>(args.epi_tile))::value;
    Tensor vals = make_tensor<float>(take<0, 3>(shape(args.tCcD)));  // (CPY,CPY_M,CPY_N)
    return ConsumerStoreCallbacks<kThreads, kEpiM, kEpiN, decltype(args.tCcD), decltype(args.residue_tCcD),
                                  decltype(vals)>(args.tCcD, args.residue_tCcD, vals, params, smem_up, smem_act,
                                                  static_cast<int>(M), static_cast<int>(N),
                                                  static_cast<int>(m) * kRows, static_cast<int>(n) * kCols,
                                                  args.thread_idx);
  }
};

}  // namespace qengine::w4a8::sm90
