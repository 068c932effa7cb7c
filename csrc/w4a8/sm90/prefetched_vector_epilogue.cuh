// A per-channel or per-token vector (w_scale, bias, a_scale) of the W4A8 cooperative epilogue,
// loaded one tile ahead (an EVT leaf node, in place of CUTLASS's Sm90ColBroadcast /
// Sm90RowBroadcast):
//
//   node(row, col) = vec[row]  (kPerRow: channels in the kernel's transposed view)  or  vec[col]
//
// Why: CUTLASS's broadcast nodes load the tile's slice of the vector from global memory when the
// tile's epilogue starts, and the cooperative kernel's tensor cores wait for that L2 round trip
// (both warp groups run the epilogue). ncu at FLUX 4608x3072->12288 (notes/h100_2026-11-24e, call
// 3): ~6% of the consumer warps' stall samples sit on those loads, once per tile.
// Here each consumer thread loads its element of the CTA's *next* tile's slice into a register
// at the end of this tile's epilogue (`end`; the first tile's when the consumers build the node,
// before their first mainloop), so the load flies during a mainloop; `begin` stores it into
// shared memory and the collective's barrier after `begin` publishes it (begin_sync_needed). The
// next tile comes from a copy of the persistent scheduler's parameters, as in
// lowrank_staged_epilogue.cuh; `begin` checks it against the tile it is in and loads again when
// they differ, so a wrong guess costs time only. Values past the problem's edge, and a null
// vector (no bias), read as 0.
#pragma once

#include <cstdint>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/fusion/sm90_visitor_tma_warpspecialized.hpp"
#include "cutlass/gemm/kernel/sm90_tile_scheduler.hpp"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass/numeric_conversion.h"

namespace qengine::w4a8::sm90 {

template <class CtaTileShapeMNK, class ElementIn, bool kPerRow>
struct Sm90PrefetchedVector {
  static constexpr int kRows = cute::size<0>(CtaTileShapeMNK{});
  static constexpr int kCols = cute::size<1>(CtaTileShapeMNK{});
  static constexpr int kLen = kPerRow ? kRows : kCols;  // the tile's slice of the vector
  // The cooperative kernel's consumer threads: warp groups 1 and 2 (threadIdx.x % 256 in the
  // epilogue); warp group 0 is the producer. One element per thread.
  static constexpr int kConsumerThreads = 256;
  static_assert(kLen <= kConsumerThreads, "one element of the tile's slice per consumer thread");

  struct SharedStorage {
    alignas(16) float vec[kLen];
  };

  using Scheduler = cutlass::gemm::kernel::detail::PersistentTileSchedulerSm90;

  struct Arguments {
    const ElementIn* ptr = nullptr;  // [channels] (kPerRow) or [tokens], contiguous; null: zeros
    int sm_count = 0;                // the kernel's KernelHardwareInfo::sm_count (its persistent grid)
  };
  struct Params {
    const ElementIn* ptr;
    int extent;                            // channels (kPerRow) or tokens
    typename Scheduler::Params scheduler;  // as the kernel builds its own, to guess each CTA's next tile
  };

  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& problem_shape, Arguments const& args, void*) {
    cutlass::KernelHardwareInfo hw{0, args.sm_count, 0};
    return {args.ptr, static_cast<int>(kPerRow ? cute::get<0>(problem_shape) : cute::get<1>(problem_shape)),
            Scheduler::to_underlying_arguments(cute::append<4>(problem_shape, 1), CtaTileShapeMNK{},
                                               cute::Shape<cute::_1, cute::_1, cute::_1>{}, hw,
                                               typename Scheduler::Arguments{})};
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const&, Arguments const& args) {
    return args.sm_count > 0;
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

  CUTLASS_HOST_DEVICE Sm90PrefetchedVector() {}
  CUTLASS_HOST_DEVICE Sm90PrefetchedVector(Params const& params, SharedStorage const& storage)
      : params(params), smem(const_cast<float*>(storage.vec)) {
#if defined(__CUDA_ARCH__)
    if (threadIdx.x >= cutlass::NumThreadsPerWarpGroup) prefetch(Scheduler(params.scheduler).get_current_work(), threadIdx.x % kConsumerThreads);
#endif
  }

  Params params;
  float* smem = nullptr;
  // Per consumer thread, kept across tiles (the node lives in the consumers' collective epilogue
  // for the whole kernel): tiles finished, the tile `end` loaded for and this thread's element.
  mutable int tiles_done = 0;
  mutable int prefetched_m = -1, prefetched_n = -1;
  mutable float next = 0.f;

  CUTLASS_DEVICE float load(int m, int n, int thread_idx) const {
    const int i = (kPerRow ? m : n) * kLen + thread_idx;
    return thread_idx < kLen && i < params.extent && params.ptr != nullptr ? static_cast<float>(params.ptr[i]) : 0.f;
  }
  template <class WorkTileInfo>
  CUTLASS_DEVICE void prefetch(WorkTileInfo const& work, int thread_idx) const {
    prefetched_m = work.is_valid() ? work.M_idx : -1;
    prefetched_n = work.is_valid() ? work.N_idx : -1;
    if (work.is_valid()) next = load(work.M_idx, work.N_idx, thread_idx);
  }

  template <class... Args>
  CUTLASS_DEVICE auto get_producer_load_callbacks(cutlass::epilogue::fusion::detail::ProducerLoadArgs<Args...> const&) {
    return cutlass::epilogue::fusion::detail::EmptyProducerLoadCallbacks{};
  }

  template <int kThreads, class CTensor, class ThrResidue>
  struct ConsumerStoreCallbacks : cutlass::epilogue::fusion::detail::EmptyConsumerStoreCallbacks {
    static_assert(kThreads == kConsumerThreads, "the prefetched vector node serves the cooperative epilogue");

    CUTLASS_DEVICE ConsumerStoreCallbacks(CTensor tCcD_, ThrResidue residue_, Sm90PrefetchedVector const* node_,
                                          int rows_, int cols_, int row0_, int col0_, int thread_idx_)
        : tCcD(tCcD_), residue(residue_), node(node_), rows(rows_), cols(cols_), row0(row0_), col0(col0_),
          thread_idx(thread_idx_) {}

    CTensor tCcD;        // (CPY,CPY_M,CPY_N,EPI_M,EPI_N) coordinates relative to the thread's first value
    ThrResidue residue;  // (rows, cols) minus the coordinates of the thread's first value
    Sm90PrefetchedVector const* node;
    int rows, cols;      // problem extent in the kernel's view (channels, tokens)
    int row0, col0;      // the tile's origin
    int thread_idx;      // among the kThreads consumer threads
    int first = 0;       // tile-relative row (kPerRow) or column of this thread's first value

    CUTLASS_DEVICE void begin() {
      const int m = row0 / kRows, n = col0 / kCols;
      // The constructor's loads assumed this numbering of the threads.
      if (thread_idx != static_cast<int>(threadIdx.x % kConsumerThreads)) __trap();
      const float v = m == node->prefetched_m && n == node->prefetched_n ? node->next : node->load(m, n, thread_idx);
      if (thread_idx < kLen) node->smem[thread_idx] = v;
      first = kPerRow ? rows - static_cast<int>(cute::get<0>(residue)) - row0
                      : cols - static_cast<int>(cute::get<1>(residue)) - col0;
    }
    CUTLASS_DEVICE bool begin_sync_needed() const { return true; }

    // After the tile's last subtile (the collective's barrier after its TMA store passed by every
    // consumer thread, so nobody reads the slice any more): load this thread's element of the
    // CTA's next tile.
    CUTLASS_DEVICE void end() {
      Scheduler scheduler(node->params.scheduler);
      scheduler.advance_to_next_work(++node->tiles_done);
      node->prefetch(scheduler.get_current_work(), thread_idx);
    }

    // A per-row vector has two values per thread in the cooperative accumulator layout (rows g and
    // g + 8 of the warp's 16): read once per subtile into registers; other rows (another layout)
    // read shared memory. Per-column values (8 per thread and subtile) are read where used.
    float row_v[2] = {0.f, 0.f};
    CUTLASS_DEVICE void begin_loop(int, int) {
      if constexpr (kPerRow) {
        row_v[0] = node->smem[first];
        row_v[1] = first + 8 < kLen ? node->smem[first + 8] : 0.f;
      }
    }

    template <typename ElementAccumulator, int FragmentSize>
    CUTLASS_DEVICE cutlass::Array<float, FragmentSize> visit(cutlass::Array<ElementAccumulator, FragmentSize> const&,
                                                            int epi_v, int epi_m, int epi_n) {
      cutlass::Array<float, FragmentSize> out;
      auto c = tCcD(cute::_, cute::_, cute::_, epi_m, epi_n);
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < FragmentSize; ++i) {
        auto coord = c(epi_v * FragmentSize + i);
        if constexpr (kPerRow) {
          const int r = static_cast<int>(cute::get<0>(coord));
          out[i] = r == 0 ? row_v[0] : r == 8 ? row_v[1] : node->smem[first + r];
        } else {
          out[i] = node->smem[first + static_cast<int>(cute::get<1>(coord))];
        }
      }
      return out;
    }
  };

  template <bool ReferenceSrc, class... Args>
  CUTLASS_DEVICE auto get_consumer_store_callbacks(cutlass::epilogue::fusion::detail::ConsumerStoreArgs<Args...> const& args) {
    auto [M, N, K, L] = args.problem_shape_mnkl;
    auto [m, n, k, l] = args.tile_coord_mnkl;
    constexpr int kThreads = decltype(cute::size(args.tiled_copy))::value;
    return ConsumerStoreCallbacks<kThreads, decltype(args.tCcD), decltype(args.residue_tCcD)>(
        args.tCcD, args.residue_tCcD, this, static_cast<int>(M), static_cast<int>(N), static_cast<int>(m) * kRows,
        static_cast<int>(n) * kCols, args.thread_idx);
  }
};

}  // namespace qengine::w4a8::sm90
