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
// The rows of a tile (lora_up: kRows x rank, lowrank_act: kCols x rank, both 16-bit; the binding
// rounds lowrank_act to the output type as the product path rounds it) are copied into shared
// memory with cp.async by the consumer threads, in wgmma's K-major "interleave" layout (8 rows x
// 16 bytes per core matrix), then fenced for the async proxy; the collective epilogue's barrier
// after `begin` publishes them (begin_sync_needed).
//
// The copies for tile t+1 are issued at the end of tile t's epilogue (`end`), and those of a
// CTA's first tile when the consumers build the node, before their first mainloop; so they fly
// during a mainloop instead of stalling the epilogue: staged at the start of each epilogue, the
// L2 round trip was ~3/4 of the node's cost (twentieth session, notes/w4a8.md). The tile
// coordinates come from a copy of the persistent scheduler's mapping (same parameters, built from
// the problem shape and SM count); `begin` checks them against the tile it is in and copies
// synchronously when they differ, so a wrong guess costs time only.
//
// Each epilogue subtile (128 rows x kEpiN tokens) is then one warpgroup MMA per warp group and 16
// of rank: wgmma m64 x kEpiN x k16, both operands from shared memory, fp32 result in registers;
// the next subtile's MMA is issued as soon as this one's has landed, so it runs behind this
// subtile's stores.
// That result's fragment is the accumulator's own (a warp holds rows 16w + g and 16w + g + 8,
// columns 8j + 2t and 8j + 2t + 1), so each thread reads off the values it needs. (The
// eighteenth session's node ran mma.sync m16n8k16 per 16x8 block with fragments loaded by hand;
// this one is 0-3% faster, notes/w4a8.md.) Each thread checks that the epilogue put its values
// where the fragment has them and traps otherwise: the layout is fixed by the tile config, so a
// config that broke it fails its first test instead of computing wrong values. (An FMA fallback
// inlined into every subtile was ~2,000 SASS instructions per subtile that never ran, and its
// instruction-cache misses cost ~5% of the kernel: ncu, nineteenth session.)
// Overwriting the buffers in `end` is safe: the tile's last subtile issues no further MMA and waits
// for its own before its TMA store, and each TMA store ends with a barrier of all consumer threads.
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
#include "cutlass/gemm/kernel/sm90_tile_scheduler.hpp"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass/numeric_types.h"

namespace qengine::w4a8::sm90 {

// ClusterShape and Arguments::scheduler: the kernel's, so that the node's copy of the tile
// scheduler hands out the same tiles.
template <class CtaTileShapeMNK, class ElementOp, int kMaxRank,
          class ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>>
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

  // The kernel's tile scheduler (the persistent one; the stream-K configs do not use this node).
  using Scheduler = cutlass::gemm::kernel::detail::PersistentTileSchedulerSm90;

  struct Arguments {
    const ElementOp* act = nullptr;  // lowrank_act [tokens, rank] in the output type, row-major, 16-byte aligned
    const ElementOp* up = nullptr;   // lora_up [channels, rank] in the output type, row-major, 16-byte aligned
    int rank = 0;                    // multiple of 16, <= kMaxRank
    int sm_count = 0;                // the kernel's KernelHardwareInfo::sm_count (its persistent grid)
    typename Scheduler::Arguments scheduler{};  // the kernel's own scheduler arguments (raster order, swizzle)
  };
  struct Params {
    const ElementOp* act;
    const ElementOp* up;
    int rank;
    int rows, cols;                        // problem extent in the kernel's view (channels, tokens)
    typename Scheduler::Params scheduler;  // as the kernel builds its own, to guess each CTA's next tile
  };

  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& problem_shape, Arguments const& args, void*) {
    cutlass::KernelHardwareInfo hw{0, args.sm_count, 0};
    return {args.act, args.up, args.rank, static_cast<int>(cute::get<0>(problem_shape)),
            static_cast<int>(cute::get<1>(problem_shape)),
            Scheduler::to_underlying_arguments(cute::append<4>(problem_shape, 1), CtaTileShapeMNK{},
                                               ClusterShape{}, hw, args.scheduler)};
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const& args) {
    return args.act != nullptr && args.up != nullptr && args.rank > 0 && args.rank % 16 == 0 &&
           args.rank <= kMaxRank && args.sm_count > 0 && reinterpret_cast<uintptr_t>(args.act) % 16 == 0 &&
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

  // The cooperative kernel's consumer threads: warp groups 1 and 2, numbered threadIdx.x % 256 in
  // the epilogue (its mma_thread_idx); warp group 0 is the producer.
  static constexpr int kConsumerThreads = 256;

  CUTLASS_HOST_DEVICE Sm90LowRankStaged() {}
  // The consumers build their collective epilogue (and this node) once, before their first
  // mainloop: the first tile's rows are copied from here, so they fly during that mainloop.
  CUTLASS_HOST_DEVICE Sm90LowRankStaged(Params const& params, SharedStorage const& storage)
      : params(params), smem_up(const_cast<uint16_t*>(storage.up)), smem_act(const_cast<uint16_t*>(storage.act)) {
#if defined(__CUDA_ARCH__)
    if (threadIdx.x >= cutlass::NumThreadsPerWarpGroup) prefetch(Scheduler(params.scheduler).get_current_work(), threadIdx.x % kConsumerThreads);
#endif
  }

  Params params;
  uint16_t* smem_up = nullptr;
  uint16_t* smem_act = nullptr;
  // Per consumer thread, kept across tiles (this object lives in the consumers' collective
  // epilogue for the whole kernel): tiles finished, and the tile whose rows `end` copied.
  mutable int tiles_done = 0;
  mutable int prefetched_m = -1, prefetched_n = -1;

  // Copies kR rows from global (row-major, rank 16-bit values each) into the interleave layout
  // with 16-byte cp.async, zero-filling rows past the problem's edge. Eight consecutive threads
  // take one 8-value chunk of eight consecutive rows: one 128-byte core-matrix row block in
  // shared memory (no bank conflicts). Chunk slots cover kMaxRank values per row; those at or past
  // `rank` are zero-filled (the MMA reads only the first `rank`). A thread copies the same rank
  // chunk c of rows r0, r0 + kStep, ...: the addresses step by constants, and every copy is issued
  // (a zero-byte read where it is out of range), so the loop has no branches; it runs once per
  // tile in the epilogue, where the tensor cores wait for it (the branchy version was ~5% of the
  // kernel at 4608x3072->12288: session 21, ncu per instruction). A thread always copies the same
  // chunks, so its own copies are all that can race with its later ones.
  template <int kR>
  CUTLASS_DEVICE void copy_rows(const ElementOp* src, int first, int limit, uint16_t* dst, int thread_idx) const {
    constexpr int kVecs = kMaxRank / 8, kStep = kConsumerThreads * 8 / kMaxRank;
    static_assert(32 % kVecs == 0 && kR % 8 == 0, "whole core matrices of rows");
    // Passes of the consumer threads over the rows; a last partial pass (224-token tiles: 3.5
    // passes of 64 rows) leaves out the threads whose rows lie past the buffer.
    constexpr int kPasses = (kR + kStep - 1) / kStep;
    const int r0 = (thread_idx / (8 * kVecs)) * 8 + thread_idx % 8, c = ((thread_idx / 8) % kVecs) * 8;
    const ElementOp* from = src + static_cast<int64_t>(first + r0) * params.rank + c;
    const int64_t from_step = static_cast<int64_t>(kStep) * params.rank;
    const uint32_t to = cute::cast_smem_ptr_to_uint(dst + offset<kR>(r0, c));
    constexpr uint32_t kToStep = kStep * 8 * sizeof(uint16_t);  // offset<kR>(r + kStep, c) - offset<kR>(r, c)
    static_assert(offset<kR>(kStep + 1, 8) - offset<kR>(1, 8) == kStep * 8, "kToStep");
    const bool in_rank = c < params.rank;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < kPasses; ++i) {
      if (kR % kStep != 0 && i == kPasses - 1 && r0 >= kR % kStep) break;  // false at compile time but in a last partial pass
      const bool ok = in_rank && first + r0 + kStep * i < limit;
      const ElementOp* p = ok ? from + from_step * i : src;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to + kToStep * i), "l"(p), "r"(ok ? 16 : 0)
                   : "memory");
    }
  }
  // Starts the copies of tile (m, n)'s rows (tile indices in the kernel's view).
  CUTLASS_DEVICE void copy_tile(int m, int n, int thread_idx) const {
    copy_rows<kRows>(params.up, m * kRows, params.rows, smem_up, thread_idx);
    copy_rows<kCols>(params.act, n * kCols, params.cols, smem_act, thread_idx);
  }
  // Starts the copies of `work`'s rows and remembers which tile they are for.
  template <class WorkTileInfo>
  CUTLASS_DEVICE void prefetch(WorkTileInfo const& work, int thread_idx) const {
    prefetched_m = work.is_valid() ? work.M_idx : -1;
    prefetched_n = work.is_valid() ? work.N_idx : -1;
    if (work.is_valid()) copy_tile(work.M_idx, work.N_idx, thread_idx);
  }

  template <class... Args>
  CUTLASS_DEVICE auto get_producer_load_callbacks(cutlass::epilogue::fusion::detail::ProducerLoadArgs<Args...> const&) {
    return cutlass::epilogue::fusion::detail::EmptyProducerLoadCallbacks{};
  }

  template <int kThreads, int kEpiM, int kEpiN, class CTensor, class ThrResidue, class RTensor>
  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::detail::EmptyConsumerStoreCallbacks {
    // Two warp groups of 64 rows each cover a 128-row subtile: the cooperative schedule.
    static_assert(kThreads == kConsumerThreads && kEpiM == 128 && kRows % kEpiM == 0,
                  "the staged low-rank node serves the cooperative (two warp group, 128-row) epilogue");
    static_assert(kEpiN % 8 == 0 && kEpiN <= 256 && kCols % kEpiN == 0, "wgmma N: a multiple of 8 up to 256");
    using WgOp = decltype(cute::SM90::GMMA::ss_op_selector<ElementOp, ElementOp, float,
                                                            cute::Shape<cute::_64, cute::Int<kEpiN>, cute::_16>,
                                                            cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>());
    using WgMma = decltype(cute::make_tiled_mma(WgOp{}));

    CUTLASS_DEVICE ConsumerStoreCallbacks(CTensor tCcD_, ThrResidue residue_, RTensor vals_, Params const& params_,
                                          Sm90LowRankStaged const* node_, int rows_, int cols_, int row0_,
                                          int col0_, int thread_idx_)
        : tCcD(tCcD_), residue(residue_), vals(vals_), params(params_), smem_up(node_->smem_up),
          smem_act(node_->smem_act), node(node_), rows(rows_), cols(cols_), row0(row0_), col0(col0_),
          thread_idx(thread_idx_) {}

    CTensor tCcD;        // (CPY,CPY_M,CPY_N,EPI_M,EPI_N) coordinates relative to the thread's first value
    ThrResidue residue;  // (rows, cols) minus the coordinates of the thread's first value
    RTensor vals;        // (CPY,CPY_M,CPY_N) the node's values for the current epilogue subtile
    Params const& params;
    uint16_t* smem_up;
    uint16_t* smem_act;
    Sm90LowRankStaged const* node;  // its per-thread state across tiles
    int rows, cols;      // problem extent in the kernel's view (channels, tokens)
    int row0, col0;      // the tile's origin
    int thread_idx;      // among the kThreads consumer threads

    static CUTLASS_DEVICE void wait_copies() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

    // The rows are in flight since the previous tile's `end` (or the constructor) if it guessed
    // this tile; otherwise they are copied now.
    CUTLASS_DEVICE void begin() {
      const int m = row0 / kRows, n = col0 / kCols;
      // The constructor's copies assumed this numbering of the threads.
      if (thread_idx != static_cast<int>(threadIdx.x % kConsumerThreads)) __trap();
      if (m != node->prefetched_m || n != node->prefetched_n) {
        wait_copies();  // a wrong guess's copies land first, then this tile's overwrite them
        node->copy_tile(m, n, thread_idx);
      }
      wait_copies();
      cutlass::arch::fence_view_async_shared();  // the copies (generic proxy), before wgmma reads them
    }

    // After the tile's last subtile (its wgmma done, and the collective's barrier after its TMA
    // store passed by every consumer thread): start copying the rows of this CTA's next tile.
    CUTLASS_DEVICE void end() {
      Scheduler scheduler(params.scheduler);
      scheduler.advance_to_next_work(++node->tiles_done);
      node->prefetch(scheduler.get_current_work(), thread_idx);
    }

    CUTLASS_DEVICE bool begin_sync_needed() const { return true; }

    static constexpr int kSubM = kRows / kEpiM, kSubN = kCols / kEpiN;  // subtiles, visited epi_n-major
    using Frag = decltype(cute::partition_fragment_C(WgMma{}, cute::Shape<cute::_64, cute::Int<kEpiN>>{}));
    // The results of the even- and odd-numbered subtiles (kEpiN / 2 fp32 values each): the next
    // subtile's MMA runs while this one's values go through the rest of the epilogue, so its
    // latency is hidden (waited for in turn, it was exposed once per subtile).
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
      // One straight-line batch per rank (rank / 16 k16 steps): with a branch between the
      // wgmmas of a batch, ptxas injects warpgroup.arrive fences around each (its C7519 note).
      CUTLASS_PRAGMA_UNROLL
      for (int steps = 1; steps <= kMaxRank / 16; ++steps) {
        if (16 * steps == params.rank) {
          warpgroup_fence_operand(d);
          warpgroup_arrive();
          mma.accumulate_ = SM90::GMMA::ScaleOut::Zero;
          CUTLASS_PRAGMA_UNROLL
          for (int s = 0; s < steps; ++s) {
            cute::gemm(mma, t_a(_, _, s), t_b(_, _, s), d);
            mma.accumulate_ = SM90::GMMA::ScaleOut::One;
          }
          warpgroup_commit_batch();
        }
      }
    }

    CUTLASS_DEVICE void begin_loop(int epi_m, int epi_n) {
      using namespace cute;
      const int idx = epi_n * kSubM + epi_m;  // compile-time once the collective's subtile loops unroll
      Frag& d = idx % 2 == 0 ? d_even : d_odd;
      if (idx == 0) issue(epi_m, epi_n, d);
      warpgroup_wait<0>();
      warpgroup_fence_operand(d);
      if (idx + 1 < kSubM * kSubN) issue((idx + 1) % kSubM, (idx + 1) / kSubM, idx % 2 == 0 ? d_odd : d_even);
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
                                  decltype(vals)>(args.tCcD, args.residue_tCcD, vals, params, this,
                                                  static_cast<int>(M), static_cast<int>(N),
                                                  static_cast<int>(m) * kRows, static_cast<int>(n) * kCols,
                                                  args.thread_idx);
  }
};

}  // namespace qengine::w4a8::sm90
