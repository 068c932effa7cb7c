// Split-K for the sm90 implicit-GEMM conv: CUTLASS 4.2's non-persistent TMA warp-specialized
// kernel (the GemmUniversal specialization that ConvUniversal derives from) with the K loop of a
// tile shared by `splits` CTAs (grid z).
//
// Why: CUTLASS 4.2 has no persistent, stream-K or split-K schedule for sm90 conv, and the UNet's
// deep convs have few output tiles over a long K: SDXL's 1280-channel 3x3 conv at 32x32 (batch 1:
// M = 1024, N = 1280, K = 11520) has 64 tiles of 128x160 for 132 SMs, the stride-2 downsamplers
// 32, SD1.5's 1280 channels at 8x8 only 8. Splitting K puts the idle SMs to work.
//
// How: split z of a tile runs k tiles [z*kt/S, (z+1)*kt/S) of the same mainloop collective. Every
// split but the last stores its accumulator fragment to a workspace in fragment order (a thread's
// registers, 16-byte vectors, a warp's stores contiguous: no coordinates needed, every CTA of one
// kernel has the same fragment layout) and counts itself in the tile's arrival counter (release).
// The last split (z = S-1) waits for S-1 arrivals (acquire), adds the partials to its registers
// and runs the unchanged epilogue (scales, bias, residual, TMA store); the others skip the
// epilogue, their producers skip its loads. No deadlock as long as blocks are dispatched in
// linear index order (what the hardware does, though CUDA does not promise it; CUTLASS 2.x's serial
// split-K semaphore relies on the same): z is the slowest index, so every split a last split waits
// for was launched before it and waits on nothing. The heuristic also picks split plans only when
// all their CTAs fit in one wave (configs.cu), so every split is resident while the last one waits.
// INT8 partials are int32 (exact); FP8 partials are fp32 (the same adds the mainloop makes).
//
// Clusters (a tile config with ClusterShape M x N x 1, TMA multicast of the shared operand tile)
// split as single CTAs do: a cluster's CTAs all have the same split index z.
//
// Workspace: [tiles] int arrival counters (zeroed by initialize_workspace on the stream: the
// workspace comes from torch's caching allocator), then [tiles][S-1][acc per thread / 4][128]
// 16-byte partial vectors. splits == 1 is the plain kernel (no workspace, no fix-up).
#pragma once

#include <cuda_runtime.h>

#include "cute/tensor.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/conv/detail.hpp"
#include "cutlass/conv/kernel/conv_universal.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/gemm/dispatch_policy.hpp"

namespace qengine::conv_sm90 {

template <class Base>
struct SplitKConv : Base {
  using typename Base::ClusterShape;
  using typename Base::CollectiveEpilogue;
  using typename Base::CollectiveMainloop;
  using typename Base::ElementAccumulator;
  using typename Base::SharedStorage;
  using typename Base::TiledMma;
  using typename Base::TileShape;
  // Clusters: the CTAs of a cluster share one k range (same grid z), so they run or skip the
  // fix-up together, and each CTA's producer drains its pipeline (load_tail) before it exits, so
  // no peer's multicast or barrier arrival targets a CTA that has left.
  static constexpr bool kClustered = cute::size(ClusterShape{}) > 1;
  static_assert(!kClustered || cute::size<2>(ClusterShape{}) == 1, "clusters in M and N only: grid z is the split index");
  static_assert(sizeof(ElementAccumulator) == 4, "int32 or fp32 accumulators");
  // One consumer warpgroup (CUTLASS's builder) or two sharing a 256-row tile (ConfigOf in
  // conv2d_sm90.cuh builds that TiledMma; CUTLASS 4.2's non-persistent kernel assumes one).
  static constexpr int kConsumerThreads = cute::size(TiledMma{});
  static constexpr int kConsumerWarpGroups = kConsumerThreads / cutlass::NumThreadsPerWarpGroup;
  static_assert(kConsumerWarpGroups == 1 || kConsumerWarpGroups == 2, "one or two consumer warpgroups");
  static_assert(Base::MaxThreadsPerBlock == kConsumerThreads + cutlass::NumThreadsPerWarpGroup, "one producer warpgroup");
  static constexpr int kAccPerThread = cute::size<0>(TileShape{}) * cute::size<1>(TileShape{}) / kConsumerThreads;
  static_assert(kAccPerThread % 4 == 0, "partials are stored as 16-byte vectors");
  using Vec = cute::conditional_t<cute::is_same_v<ElementAccumulator, float>, float4, int4>;
  static constexpr size_t kCounterAlign = 256;
  // Checked here rather than at launch (cudaFuncSetAttribute would fail on the device).
  static_assert(sizeof(SharedStorage) <= 227 * 1024, "shared memory over sm90's 227 KB per CTA: fewer stages");

  using BaseArguments = typename Base::Arguments;
  struct Arguments : BaseArguments {
    int splits = 1;
  };
  struct Params : Base::Params {
    int splits = 1;
    int* arrivals = nullptr;
    Vec* partials = nullptr;
  };

  // Output tiles of the base kernel's grid, from the problem shape alone: the base's
  // to_underlying_arguments would also build the TMA descriptors (host work on every call).
  static int tile_count(BaseArguments const& args) {
    static_assert(!cutlass::gemm::kernel::detail::Has_SwapAB_v<CollectiveMainloop>, "the base would swap M and N");
    typename Base::Params shape_only{};
    shape_only.problem_shape =
        cutlass::conv::detail::get_problem_shape_MNKL_helper<CollectiveMainloop>(args.problem_shape, cute::true_type{});
    const dim3 grid = Base::get_grid_shape(shape_only);
    return static_cast<int>(grid.x * grid.y * grid.z);
  }
  static size_t counter_bytes(int tiles) { return (size_t(tiles) * sizeof(int) + kCounterAlign - 1) / kCounterAlign * kCounterAlign; }

  static Params to_underlying_arguments(Arguments const& args, void* workspace) {
    Params params;
    static_cast<typename Base::Params&>(params) = Base::to_underlying_arguments(args, workspace);
    params.splits = args.splits < 1 ? 1 : args.splits;
    if (params.splits > 1 && workspace != nullptr) {
      params.arrivals = static_cast<int*>(workspace);
      params.partials = reinterpret_cast<Vec*>(static_cast<char*>(workspace) + counter_bytes(tile_count(args)));
    }
    return params;
  }

  static bool can_implement(Arguments const& args) { return args.splits >= 1 && Base::can_implement(args); }

  static size_t get_workspace_size(Arguments const& args) {
    if (args.splits <= 1) return 0;
    const int tiles = tile_count(args);
    return counter_bytes(tiles) + size_t(tiles) * (args.splits - 1) * kAccPerThread * kConsumerThreads * sizeof(ElementAccumulator);
  }

  static cutlass::Status initialize_workspace(Arguments const& args, void* workspace = nullptr, cudaStream_t stream = nullptr,
                                              cutlass::CudaHostAdapter* = nullptr) {
    if (args.splits <= 1) return cutlass::Status::kSuccess;
    if (workspace == nullptr) return cutlass::Status::kErrorWorkspaceNull;
    return cudaMemsetAsync(workspace, 0, size_t(tile_count(args)) * sizeof(int), stream) == cudaSuccess ? cutlass::Status::kSuccess
                                                                                             : cutlass::Status::kErrorInternal;
  }

  static dim3 get_grid_shape(Params const& params) {
    dim3 grid = Base::get_grid_shape(params);
    grid.z *= params.splits;  // conv problems have L = 1: z is the split index
    return grid;
  }

  CUTLASS_DEVICE void operator()(Params const& params, char* smem_buf) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    using namespace cute;
    SharedStorage& shared_storage = *reinterpret_cast<SharedStorage*>(smem_buf);
    const int thread_idx = int(threadIdx.x);
    const int lane_idx = cutlass::canonical_lane_idx();
    const int warp_idx = cutlass::canonical_warp_idx_sync();
    const int warp_group_thread_idx = thread_idx % cutlass::NumThreadsPerWarpGroup;
    const int mma_thread_idx = thread_idx % kConsumerThreads;  // the consumers' index into the TiledMma
    const bool producer = cutlass::canonical_warp_group_idx() == 0;
    const bool producer_lead_warp = producer && warp_idx % cutlass::NumWarpsPerWarpGroup == 0;

    if (warp_idx == 0 && cute::elect_one_sync()) {
      CollectiveMainloop::prefetch_tma_descriptors(params.mainloop);
      CollectiveEpilogue::prefetch_tma_descriptors(params.epilogue);
    }

    using MainloopPipeline = typename CollectiveMainloop::MainloopPipeline;
    typename MainloopPipeline::Params mainloop_pipeline_params;
    if (producer_lead_warp) mainloop_pipeline_params.role = MainloopPipeline::ThreadCategory::Producer;
    if (!producer) mainloop_pipeline_params.role = MainloopPipeline::ThreadCategory::Consumer;
    mainloop_pipeline_params.is_leader = warp_group_thread_idx == 0;
    mainloop_pipeline_params.num_consumers = kConsumerThreads;
    mainloop_pipeline_params.transaction_bytes = params.mainloop.tma_transaction_bytes;
    MainloopPipeline mainloop_pipeline(shared_storage.pipelines.mainloop, mainloop_pipeline_params, ClusterShape{});

    using EpiLoadPipeline = typename CollectiveEpilogue::LoadPipeline;
    typename EpiLoadPipeline::Params epi_load_pipeline_params;
    if (producer_lead_warp) epi_load_pipeline_params.role = EpiLoadPipeline::ThreadCategory::Producer;
    if (!producer) epi_load_pipeline_params.role = EpiLoadPipeline::ThreadCategory::Consumer;
    epi_load_pipeline_params.dst_blockid = cute::block_rank_in_cluster();
    epi_load_pipeline_params.producer_arv_count = cutlass::NumThreadsPerWarp;
    epi_load_pipeline_params.consumer_arv_count = kConsumerThreads;
    if constexpr (CollectiveEpilogue::RequiresTransactionBytes) {
      epi_load_pipeline_params.transaction_bytes = params.epilogue.tma_transaction_bytes;
    }
    EpiLoadPipeline epi_load_pipeline(shared_storage.pipelines.epi_load, epi_load_pipeline_params);

    using EpiStorePipeline = typename CollectiveEpilogue::StorePipeline;
    typename EpiStorePipeline::Params epi_store_pipeline_params;
    epi_store_pipeline_params.always_wait = true;
    EpiStorePipeline epi_store_pipeline(epi_store_pipeline_params);

    typename CollectiveMainloop::PipelineState mainloop_pipe_consumer_state;
    typename CollectiveEpilogue::LoadPipelineState epi_load_pipe_consumer_state;
    cutlass::PipelineState mainloop_pipe_producer_state = cutlass::make_producer_start_state<MainloopPipeline>();
    cutlass::PipelineState epi_load_pipe_producer_state = cutlass::make_producer_start_state<EpiLoadPipeline>();
    cutlass::PipelineState epi_store_pipe_producer_state = cutlass::make_producer_start_state<EpiStorePipeline>();
    // Pipeline initialization visible to every warp of the cluster (as CUTLASS's kernel): the
    // cluster's wait comes after the tensors are set up, before the first load.
    if constexpr (kClustered) {
      cute::cluster_arrive_relaxed();
    } else {
      __syncthreads();
    }

    auto blk_shape = TileShape{};
    TiledMma tiled_mma;
    auto problem_shape_MNKL = append<4>(params.problem_shape, Int<1>{});
    CollectiveMainloop collective_mainloop;
    CollectiveEpilogue collective_epilogue(params.epilogue, shared_storage.tensors.epilogue);
    auto load_inputs = collective_mainloop.load_init(problem_shape_MNKL, params.mainloop);
    Tensor gA_mkl = get<0>(load_inputs);
    Tensor gB_nkl = get<1>(load_inputs);
    auto m_coord = idx2crd(int(blockIdx.x), shape<2>(gA_mkl));
    auto n_coord = idx2crd(int(blockIdx.y), shape<2>(gB_nkl));
    auto blk_coord = make_coord(m_coord, n_coord, _, Int<0>{});

    // This split's k tiles: [begin, end) of the tile's k_tiles, balanced (sizes differ by <= 1).
    const int splits = params.splits;
    const int split = int(blockIdx.z);
    const int k_tiles = int(size<3>(gA_mkl));
    const int k_begin = int(int64_t(k_tiles) * split / splits);
    const int k_tile_count = int(int64_t(k_tiles) * (split + 1) / splits) - k_begin;
    auto k_tile_iter = cute::make_coord_iterator(idx2crd(k_begin, shape<3>(gA_mkl)), shape<3>(gA_mkl));
    const bool runs_epilogue = split == splits - 1;
    if constexpr (kClustered) cute::cluster_wait();

    if (producer) {
      // With two consumer warpgroups the 384-thread CTA starts at 168 registers per thread; the
      // producer needs few, the consumers' 128 fp32 accumulators need more (as CUTLASS's
      // cooperative GEMM kernel does).
      if constexpr (kConsumerWarpGroups == 2) cutlass::arch::warpgroup_reg_dealloc<40>();
      if (producer_lead_warp) {
        cutlass::arch::wait_on_dependent_grids();
        if (k_tile_count > 0) {
          collective_mainloop.load(params.mainloop, mainloop_pipeline, mainloop_pipe_producer_state, load_inputs, blk_coord,
                                   k_tile_iter, k_tile_count, lane_idx, cute::block_rank_in_cluster(),
                                   shared_storage.tensors.mainloop);
          mainloop_pipe_producer_state.advance(k_tile_count);
          collective_mainloop.load_tail(mainloop_pipeline, mainloop_pipe_producer_state);
        }
        if (runs_epilogue && collective_epilogue.is_producer_load_needed()) {
          __syncwarp();
          epi_load_pipe_producer_state = collective_epilogue.load(epi_load_pipeline, epi_load_pipe_producer_state,
                                                                  problem_shape_MNKL, blk_shape, blk_coord, tiled_mma,
                                                                  lane_idx, shared_storage.tensors.epilogue);
          collective_epilogue.load_tail(epi_load_pipeline, epi_load_pipe_producer_state);
        }
      }
      return;
    }

    if constexpr (kConsumerWarpGroups == 2) cutlass::arch::warpgroup_reg_alloc<232>();
    Tensor accumulators = partition_fragment_C(tiled_mma, take<0, 2>(blk_shape));  // (MMA,MMA_M,MMA_N)
    static_assert(decltype(size(accumulators))::value == kAccPerThread, "fragment size");
    if (k_tile_count > 0) {
      collective_mainloop.mma(mainloop_pipeline, mainloop_pipe_consumer_state, accumulators, k_tile_count,
                              mma_thread_idx, shared_storage.tensors.mainloop, params.mainloop);
      collective_mainloop.mma_tail(mainloop_pipeline, mainloop_pipe_consumer_state, k_tile_count);
    } else {
      clear(accumulators);  // more splits than k tiles: this split adds zero
    }

    if (splits > 1) {
      const int tile = int(blockIdx.x + blockIdx.y * gridDim.x);
      int* arrivals = params.arrivals + tile;
      Vec* tile_partials = params.partials + size_t(tile) * (splits - 1) * (kAccPerThread / 4) * kConsumerThreads;
      cutlass::arch::NamedBarrier barrier(kConsumerThreads, cutlass::arch::ReservedNamedBarriers::StreamkBarrier0);
      if (!runs_epilogue) {
        Vec* dst = tile_partials + size_t(split) * (kAccPerThread / 4) * kConsumerThreads + mma_thread_idx;
        CUTLASS_PRAGMA_UNROLL
        for (int v = 0; v < kAccPerThread / 4; ++v) {
          Vec u;
          u.x = accumulators(4 * v + 0);
          u.y = accumulators(4 * v + 1);
          u.z = accumulators(4 * v + 2);
          u.w = accumulators(4 * v + 3);
          __stcg(dst + v * kConsumerThreads, u);
        }
        barrier.arrive_and_wait();
        if (mma_thread_idx == 0) {
          // Release: the fence orders the consumers' stores (seen through the barrier) first.
          asm volatile("fence.acq_rel.gpu;\n" ::: "memory");
          asm volatile("red.relaxed.gpu.global.add.s32 [%0], %1;\n" ::"l"(arrivals), "r"(1) : "memory");
        }
        return;
      }
      if (mma_thread_idx == 0) {
        int arrived = 0;
        do {
          asm volatile("ld.global.acquire.gpu.b32 %0, [%1];\n" : "=r"(arrived) : "l"(arrivals) : "memory");
        } while (arrived < splits - 1);
      }
      barrier.arrive_and_wait();
      for (int s = 0; s < splits - 1; ++s) {
        const Vec* src = tile_partials + size_t(s) * (kAccPerThread / 4) * kConsumerThreads + mma_thread_idx;
        CUTLASS_PRAGMA_UNROLL
        for (int v = 0; v < kAccPerThread / 4; ++v) {
          const Vec u = __ldcg(src + v * kConsumerThreads);
          accumulators(4 * v + 0) += u.x;
          accumulators(4 * v + 1) += u.y;
          accumulators(4 * v + 2) += u.z;
          accumulators(4 * v + 3) += u.w;
        }
      }
    }

    cutlass::arch::launch_dependent_grids();
    auto [epi_load_pipe_consumer_state_next, epi_store_pipe_producer_state_next] = collective_epilogue.store(
        epi_load_pipeline, epi_load_pipe_consumer_state, epi_store_pipeline, epi_store_pipe_producer_state, problem_shape_MNKL,
        blk_shape, blk_coord, accumulators, tiled_mma, mma_thread_idx, shared_storage.tensors.epilogue);
    collective_epilogue.store_tail(epi_load_pipeline, epi_load_pipe_consumer_state_next, epi_store_pipeline,
                                   epi_store_pipe_producer_state_next);
#endif
  }
};

}  // namespace qengine::conv_sm90
