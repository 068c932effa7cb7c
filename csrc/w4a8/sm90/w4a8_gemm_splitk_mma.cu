// W4A8 GEMM for few tokens: INT4 weights widened to INT8 in registers, INT8 mma.sync, K split
// over a thread-block cluster and reduced through distributed shared memory (sm_90a).
//
// Why a second kernel next to the CUTLASS wgmma one: at M <= 64 a W4A8 GEMM is a weight stream
// (3072x3072: 4.7 MB of weights, 0.2 MB of activations). The wgmma kernel gives each 64-row tile
// of weights to one CTA that walks all of K, so N = 3072 keeps 48 of 132 SMs busy and streams
// weights at ~0.5 TB/s (notes/w4a8.md), slower than W8A8 with twice the bytes. Here:
// - A CTA owns 128 weight rows x up to 64 tokens and a slice of K; the CTAs of one cluster (up
//   to 8) take the slices of the same rows, so rows x slices fill the GPU even at N = 3072.
// - Each warp streams its 32 weight rows straight from global memory into registers (8 bytes
//   per thread per 16x32 block: the prepacked layout of weight_layout.cuh stores every thread's
//   16 values of an m16n8k32 A fragment together) and widens them to 16 x w with 3 integer ops +
//   2 byte permutes per 8 values (widen_8_times16.cuh; the epilogue multiplies by 1/16, exact).
// - The activations of a stage are shared by the CTA's 4 warps: cp.async into shared memory,
//   rows padded by 16 bytes so a fragment's 8 token rows hit distinct banks.
// - Both go through a ring of stages (4 x 128 K or 2 x 256 K): the loads of the next stages are
//   in flight while one is multiplied. (A first version double-buffered the weights by copying
//   the next stage's registers over the current ones; the copy waited for the loads, so at most
//   one stage was in flight.)
// - The int32 partial tiles are summed across the cluster through DSMEM (exact: integer adds),
//   each CTA finishing a share of the tile's 16x8 fragments: scales, bias, the low-rank branch
//   (either its precomputed [M, N] product, or lowrank_act [M, r] x lora_up [N, r] with 16-bit
//   mma.sync here, lowrank_act rounded to the output dtype as on the product path), output.
// - The cluster barriers are split into arrive and wait, with the epilogue's scale and bias loads
//   issued in between (they fly while the peers finish their K slices), and the last one waited
//   for only at exit (a CTA's epilogue runs while its peers still read its partial tile).
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "qengine/cp_async.cuh"
#include "qengine/w4a8_gemm.h"
#include "../kernels.h"
#include "widen_8_times16.cuh"

namespace qengine::w4a8::sm90 {
namespace {

namespace cg = cooperative_groups;

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerCta = kWarps * 32;  // each warp: two 16-row blocks of the prepacked layout
constexpr int kMaxSplits = 8;             // portable cluster size
constexpr int kBlockBytes = 256;          // one 16x32 INT4 block of the prepacked layout

template <int kTokenFrags_, int kStageK_, int kRing_>
struct Shape {
  static constexpr int kTokenFrags = kTokenFrags_;          // 8-token MMA fragments per CTA
  static constexpr int kTokens = 8 * kTokenFrags;
  static constexpr int kStageK = kStageK_;
  static constexpr int kSteps = kStageK / 32;               // m16n8k32 steps per stage
  static constexpr int kRing = kRing_;                      // stages in flight + the one in use
  static constexpr int kPitch = kStageK + 16;               // smem bytes per token row
  static constexpr int kStageBytes = kTokens * kPitch;
  static constexpr int kPipeBytes = kRing * kStageBytes;
  static constexpr int kFrags = 2 * kTokenFrags;            // 16x8 output fragments per warp
  static constexpr int kReduceBytes = kFrags * kThreads * 16;  // the int32 tile
  static constexpr int kSmemBytes = kPipeBytes > kReduceBytes ? kPipeBytes : kReduceBytes;
  static_assert(kSmemBytes <= 48 * 1024, "static shared memory limit");
};

struct Plan {
  int token_blocks;      // ceil(M / tokens per CTA)
  int row_tiles;         // ceil(N / 128)
  int stages;            // ceil(K / stage K)
  int splits;            // CTAs per cluster along K (1..8)
  int stages_per_split;
};

int token_frags_for(int M) { return M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : 8; }

// max_clusters(c): how many clusters of c CTAs of this instantiation the GPU holds at once
// (registers allow 2 CTAs per SM at 64 tokens, 3-4 below; a cluster must fit in one GPC). The
// plan takes the most splits whose clusters (one per tile) all fit in one wave: a first plan
// aimed at ~2 CTAs per SM regardless and put 288 CTAs on 264 slots at M = 64, N = 12288 (ncu:
// the partial second wave doubled the time).
template <class MaxClusters>
Plan make_plan(const W4A8GemmParams& p, int tokens_per_cta, int stage_k, MaxClusters&& max_clusters) {
  Plan s{};
  s.token_blocks = (p.M + tokens_per_cta - 1) / tokens_per_cta;
  s.row_tiles = (p.N + kRowsPerCta - 1) / kRowsPerCta;
  s.stages = (p.K + stage_k - 1) / stage_k;
  const long tiles = long(s.token_blocks) * s.row_tiles;
  int want = 1;
  for (int c = std::min(kMaxSplits, s.stages); c > 1; --c)
    if (tiles <= max_clusters(c)) {
      want = c;
      break;
    }
  s.stages_per_split = (s.stages + want - 1) / want;  // a split: >= 1 stage
  s.splits = (s.stages + s.stages_per_split - 1) / s.stages_per_split;
  return s;
}

// Weights are read once: keep them out of L1.
__device__ __forceinline__ uint2 load_weights_8b(const uint8_t* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// barrier.cluster in two halves: arrive (release: this thread's earlier shared-memory writes and
// reads are done as far as the peers are concerned) and wait (acquire). Every thread of the
// cluster calls them alternately, once each per barrier.
__device__ __forceinline__ void cluster_arrive() { asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory"); }

__device__ __forceinline__ void mma_s8_16x8x32(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <class OutT>
struct Out16;
template <>
struct Out16<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_float(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Out16<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  static __device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
};

// The fused low-rank term of one 16 (rows) x 8 (tokens) fragment: lora_up[n, :] . lowrank_act[m, :]
// with 16-bit mma.sync (m16n8k16, fp32 accumulation), in the int32 accumulator's fragment layout.
template <class OutT>
__device__ __forceinline__ void lowrank_fragment(float (&d)[4], const W4A8GemmParams& p, int n_base, int m_base,
                                                 int g, int t) {
  const OutT* up = static_cast<const OutT*>(p.lora_up);
  const int m = m_base + g;
  const float* act = p.lowrank_act + static_cast<int64_t>(m < p.M ? m : 0) * p.rank;
  const uint32_t* up0 = reinterpret_cast<const uint32_t*>(up + static_cast<int64_t>(n_base + g) * p.rank);
  const uint32_t* up1 = reinterpret_cast<const uint32_t*>(up + static_cast<int64_t>(n_base + g + 8) * p.rank);
  for (int k0 = 0; k0 < p.rank; k0 += 16) {
    const uint32_t a[4] = {up0[(k0 >> 1) + t], up1[(k0 >> 1) + t], up0[(k0 >> 1) + 4 + t], up1[(k0 >> 1) + 4 + t]};
    uint32_t b0 = 0, b1 = 0;
    if (m < p.M) {
      const float2 x0 = *reinterpret_cast<const float2*>(act + k0 + 2 * t);
      const float2 x1 = *reinterpret_cast<const float2*>(act + k0 + 8 + 2 * t);
      b0 = Out16<OutT>::pack(x0.x, x0.y);
      b1 = Out16<OutT>::pack(x1.x, x1.y);
    }
    Out16<OutT>::mma(d, a, b0, b1);
  }
}

// Where one thread's loads of a stage come from and go to, computed once per CTA: per stage
// only a pointer offset changes. (Computing addresses and bounds per element, as a first
// version did, made ~200 instructions per k-step; ncu showed the kernel issue-bound at M = 64.)
// Loads are never predicated on the weight rows or the K tail: out-of-range rows and steps read
// the last valid ones, and their products are never used (multiply_stage stops at the K tail,
// the epilogue skips rows >= N).
template <class S>
struct StageLoader {
  static constexpr int kChunks = S::kStageK / 16;                       // 16-byte pieces per token row
  static constexpr int kActIters = (S::kTokens * kChunks + kThreads - 1) / kThreads;
  const uint8_t* w_src[2];   // this thread's 8 bytes of k-step 0 in each of its two row blocks
  int64_t w_step;            // bytes between consecutive k-steps of one row block
  int last_kstep;
  const int8_t* a_src[kActIters];
  int a_dst[kActIters];      // byte offset in a stage slot; -1: no piece for this thread
  bool a_row_ok[kActIters];
  int a_k[kActIters];        // k of the piece within a stage
  int K;

  __device__ __forceinline__ StageLoader(const W4A8GemmParams& p, int m0, int nb0, int blocks_n, int lane) {
    w_step = static_cast<int64_t>(blocks_n) * kBlockBytes;
    last_kstep = p.K / 32 - 1;
    K = p.K;
#pragma unroll
    for (int r = 0; r < 2; ++r) w_src[r] = p.w + static_cast<int64_t>(min(nb0 + r, blocks_n - 1)) * kBlockBytes + lane * 8;
#pragma unroll
    for (int i = 0; i < kActIters; ++i) {
      const int c = threadIdx.x + i * kThreads;
      const int row = c / kChunks, chunk = c % kChunks;
      const bool have = c < S::kTokens * kChunks;
      a_row_ok[i] = have && m0 + row < p.M;
      a_src[i] = p.a + static_cast<int64_t>(a_row_ok[i] ? m0 + row : 0) * p.lda + chunk * 16;
      a_dst[i] = have ? row * S::kPitch + chunk * 16 : -1;
      a_k[i] = chunk * 16;
    }
  }

  __device__ __forceinline__ void load(uint2 (&w)[S::kSteps][2], uint8_t* act_slot, int stage) const {
    const int k0 = stage * S::kStageK;
#pragma unroll
    for (int i = 0; i < kActIters; ++i) {
      if (a_dst[i] < 0) continue;
      const bool ok = a_row_ok[i] && k0 + a_k[i] < K;
      cp_async::copy_16(act_slot + a_dst[i], ok ? a_src[i] + k0 : a_src[i], ok ? 16 : 0);
    }
#pragma unroll
    for (int j = 0; j < S::kSteps; ++j) {
      const int64_t off = static_cast<int64_t>(min(stage * S::kSteps + j, last_kstep)) * w_step;
#pragma unroll
      for (int r = 0; r < 2; ++r) w[j][r] = load_weights_8b(w_src[r] + off);
    }
  }
};

// The K loop: a ring of kRing stages. Weights of a stage live in registers (slot u of w),
// activations in shared memory (slot u of smem); kRing - 1 stages are in flight while one is
// multiplied. Slots are indexed by compile-time constants only (the ring is unrolled), so no
// register copy ever waits on a load that is still in flight.
template <class S>
__device__ __forceinline__ void issue_stage(const StageLoader<S>& loader, uint2 (&w)[S::kSteps][2], uint8_t* act_slot,
                                            int stage, int stage_end) {
  if (stage < stage_end) loader.load(w, act_slot, stage);
  cp_async::commit();  // also when empty: the group count stays one per stage
}

template <class S>
__device__ __forceinline__ void multiply_stage(int (&acc)[2][S::kTokenFrags][4], const uint2 (&w)[S::kSteps][2],
                                               const uint8_t* act_slot, int stage, int ksteps, int g, int t) {
  const uint8_t* act = act_slot + g * S::kPitch + 4 * t;
#pragma unroll
  for (int j = 0; j < S::kSteps; ++j) {
    if (stage * S::kSteps + j >= ksteps) break;  // the K tail of the last stage (uniform)
    uint32_t a[2][4];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      widen_8_times16(w[j][r].x, a[r][0], a[r][1]);  // 16 x w: the accumulator is 16x the product
      widen_8_times16(w[j][r].y, a[r][2], a[r][3]);
    }
#pragma unroll
    for (int f = 0; f < S::kTokenFrags; ++f) {
      const uint8_t* b = act + f * 8 * S::kPitch + j * 32;
      const uint32_t b0 = *reinterpret_cast<const uint32_t*>(b);
      const uint32_t b1 = *reinterpret_cast<const uint32_t*>(b + 16);
#pragma unroll
      for (int r = 0; r < 2; ++r) mma_s8_16x8x32(acc[r][f], a[r], b0, b1);
    }
  }
}

template <class S, class OutT>
__global__ void __launch_bounds__(kThreads, 2) w4a8_splitk_kernel(W4A8GemmParams p, Plan plan) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __shared__ __align__(16) uint8_t smem[S::kSmemBytes];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;  // PTX fragment "groupID" / "threadID_in_group"
  const int split = blockIdx.y;           // == rank in the cluster (cluster dims 1 x splits x 1)
  const int m0 = blockIdx.z * S::kTokens;
  const int blocks_n = p.N / 16;
  const int nb0 = blockIdx.x * (kRowsPerCta / 16) + warp * 2;  // this warp's two 16-row blocks
  const int stage_begin = split * plan.stages_per_split;
  const int stage_end = min(stage_begin + plan.stages_per_split, plan.stages);
  const int ksteps = p.K / 32;

  int acc[2][S::kTokenFrags][4];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int f = 0; f < S::kTokenFrags; ++f)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][f][e] = 0;

  const StageLoader<S> loader(p, m0, nb0, blocks_n, lane);
  uint2 w[S::kRing][S::kSteps][2];
#pragma unroll
  for (int u = 0; u < S::kRing - 1; ++u) issue_stage<S>(loader, w[u], smem + u * S::kStageBytes, stage_begin + u, stage_end);
  for (int base = stage_begin; base < stage_end; base += S::kRing) {
#pragma unroll
    for (int u = 0; u < S::kRing; ++u) {
      const int stage = base + u;
      if (stage >= stage_end) break;  // uniform
      cp_async::wait<S::kRing - 2>();  // this stage's activations have landed
      __syncthreads();                // ... for every thread; and slot u - 1 is free again
      const int kRefill = (u + S::kRing - 1) % S::kRing;  // a constant once unrolled
      issue_stage<S>(loader, w[kRefill], smem + kRefill * S::kStageBytes, stage + S::kRing - 1, stage_end);
      multiply_stage<S>(acc, w[u], smem + u * S::kStageBytes, stage, ksteps, g, t);
    }
  }
  cp_async::wait<0>();
  __syncthreads();

  // Cross-split reduction: every CTA leaves its tile in its own shared memory (16 bytes per
  // thread and fragment), then finishes the fragments it owns (frag % splits == its rank) by
  // adding the other CTAs' copies through DSMEM, all loads of a fragment issued together.
  int4* tile = reinterpret_cast<int4*>(smem);
  cg::cluster_group cluster = cg::this_cluster();
  const bool clustered = plan.splits > 1;
  // Which CTA of the cluster finishes a 16x8 fragment (r * kTokenFrags + f) of the tile.
  const auto owns = [&](int frag) { return frag % plan.splits == split; };
  if (clustered) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int f = 0; f < S::kTokenFrags; ++f)
        tile[(r * S::kTokenFrags + f) * kThreads + threadIdx.x] =
            make_int4(acc[r][f][0], acc[r][f][1], acc[r][f][2], acc[r][f][3]);
    cluster_arrive();
  }
  // The epilogue's per-row and per-token factors of the fragments this CTA finishes, loaded
  // while the peers finish their K slices (rows past N read row 0; tokens not needed read 0).
  // ws = w_scale / 16: the accumulator is 16x the dot product; w_scale / 16 is exact, so
  // ws * acc is w_scale * (acc / 16) rounded once.
  float ws[2][2], bias[2][2], as[S::kTokenFrags][2];
#pragma unroll
  for (int r = 0; r < 2; ++r)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int n = (nb0 + r) * 16 + g + 8 * h;
      const int n_ok = n < p.N ? n : 0;
      ws[r][h] = p.w_scale[n_ok] * 0.0625f;
      bias[r][h] = p.bias != nullptr ? Out16<OutT>::to_float(static_cast<const OutT*>(p.bias)[n_ok]) : 0.f;
    }
#pragma unroll
  for (int f = 0; f < S::kTokenFrags; ++f) {
    const bool owned = owns(f) || owns(S::kTokenFrags + f);
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int m = m0 + f * 8 + 2 * t + e;
      as[f][e] = owned && m < p.M ? p.a_scale[m] : 0.f;
    }
  }
  if (clustered) {
    cluster_wait();
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int f = 0; f < S::kTokenFrags; ++f) {
        const int frag = r * S::kTokenFrags + f;
        if (!owns(frag)) continue;
        int4 others[kMaxSplits];
#pragma unroll
        for (int q = 0; q < kMaxSplits; ++q)
          others[q] = (q < plan.splits && q != split) ? cluster.map_shared_rank(tile, q)[frag * kThreads + threadIdx.x]
                                                      : make_int4(0, 0, 0, 0);
#pragma unroll
        for (int q = 0; q < kMaxSplits; ++q) {
          acc[r][f][0] += others[q].x;
          acc[r][f][1] += others[q].y;
          acc[r][f][2] += others[q].z;
          acc[r][f][3] += others[q].w;
        }
      }
    // Done reading the peers' tiles: they may leave once their own epilogue is done.
    cluster_arrive();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int nb = nb0 + r;
    if (nb >= blocks_n) continue;
#pragma unroll
    for (int f = 0; f < S::kTokenFrags; ++f) {
      const int frag = r * S::kTokenFrags + f;
      if (!owns(frag)) continue;
      const int m_base = m0 + f * 8;
      if (m_base >= p.M) continue;
      float lr[4] = {0.f, 0.f, 0.f, 0.f};
      if (p.lowrank_act != nullptr && p.rank > 0) lowrank_fragment<OutT>(lr, p, nb * 16, m_base, g, t);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int n = nb * 16 + g + (e >> 1) * 8;
        const int m = m_base + 2 * t + (e & 1);
        if (m >= p.M) continue;
        float add = lr[e] + bias[r][e >> 1];
        if (p.lowrank != nullptr)
          add += Out16<OutT>::to_float(static_cast<const OutT*>(p.lowrank)[static_cast<int64_t>(m) * p.ldo + n]);
        const float y = fmaf(as[f][e & 1], ws[r][e >> 1] * static_cast<float>(acc[r][f][e]), add);
        static_cast<OutT*>(p.out)[static_cast<int64_t>(m) * p.ldo + n] = Out16<OutT>::from_float(y);
      }
    }
  }
  // No CTA may leave while the others still read its shared memory.
  if (clustered) cluster_wait();
#endif
}

template <int kStageK, int kRing, int kTokenFrags, class OutT>
cudaError_t launch_typed(const W4A8GemmParams& p, cudaStream_t stream) {
  using S = Shape<kTokenFrags, kStageK, kRing>;
  auto* kernel = w4a8_splitk_kernel<S, OutT>;
  cudaLaunchConfig_t cfg{};
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = 0;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  // Cluster capacity per cluster size, asked once per process (one device kind per process is
  // assumed: these kernels exist for sm_90a only).
  static std::atomic<int> capacity[kMaxSplits + 1] = {};
  auto max_clusters = [&](int c) {
    int n = capacity[c].load(std::memory_order_relaxed);
    if (n == 0) {
      attr[0].val.clusterDim.y = c;
      cfg.gridDim = dim3(1, c, 1);
      if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess || n <= 0) {
        (void)cudaGetLastError();  // clear it: the launch below must not report it
        n = -1;                    // unknown: never chosen
      }
      capacity[c].store(n, std::memory_order_relaxed);
    }
    return n;
  };
  const Plan plan = make_plan(p, S::kTokens, kStageK, max_clusters);
  if (plan.token_blocks > 65535) return cudaErrorInvalidValue;
  cfg.gridDim = dim3(plan.row_tiles, plan.splits, plan.token_blocks);
  attr[0].val.clusterDim.y = plan.splits;
  return cudaLaunchKernelEx(&cfg, kernel, p, plan);
}

template <int kStageK, int kRing, class OutT>
cudaError_t launch_frags(const W4A8GemmParams& p, cudaStream_t stream) {
  switch (token_frags_for(p.M)) {
    case 1: return launch_typed<kStageK, kRing, 1, OutT>(p, stream);
    case 2: return launch_typed<kStageK, kRing, 2, OutT>(p, stream);
    case 4: return launch_typed<kStageK, kRing, 4, OutT>(p, stream);
    default: return launch_typed<kStageK, kRing, 8, OutT>(p, stream);
  }
}

template <int kStageK, int kRing>
cudaError_t run_splitk(const W4A8GemmParams& p, cudaStream_t stream) {
  if ((p.lowrank_act != nullptr) != (p.lora_up != nullptr) || (p.lowrank_act != nullptr && p.lowrank != nullptr) ||
      (p.lowrank_act != nullptr && (p.rank <= 0 || p.rank % 16 != 0)))
    return cudaErrorInvalidValue;
  cudaError_t err = p.out_type == FloatType::kBF16 ? launch_frags<kStageK, kRing, __nv_bfloat16>(p, stream)
                                                   : launch_frags<kStageK, kRing, __half>(p, stream);
  return err != cudaSuccess ? err : cudaGetLastError();
}

}  // namespace

cudaError_t w4a8_sm90_mma_128x64x128_splitk_run(const W4A8GemmParams& p, cudaStream_t stream) {
  return run_splitk<128, 4>(p, stream);
}
size_t w4a8_sm90_mma_128x64x128_splitk_workspace(const W4A8GemmParams&) { return 0; }
cudaError_t w4a8_sm90_mma_128x64x256_splitk_run(const W4A8GemmParams& p, cudaStream_t stream) {
  return run_splitk<256, 2>(p, stream);
}
size_t w4a8_sm90_mma_128x64x256_splitk_workspace(const W4A8GemmParams&) { return 0; }

}  // namespace qengine::w4a8::sm90
