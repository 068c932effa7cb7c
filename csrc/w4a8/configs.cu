// W4A8 tile configs: names, the (M, N, K) heuristic and the launcher that routes a config to
// its translation unit. Compiled for every arch; the kernels themselves only with sm_90a.
#include "qengine/w4a8_gemm.h"
#include "kernels.h"

namespace qengine {

const char* w4a8_tile_config_name(W4A8TileConfig c) {
  switch (c) {
    case W4A8TileConfig::kSm90_128x128x128_Coop: return "sm90_128x128x128_coop";
    case W4A8TileConfig::kSm90_64x128x128_Pingpong: return "sm90_64x128x128_pingpong";
    case W4A8TileConfig::kSm90_64x64x128_Pingpong: return "sm90_64x64x128_pingpong";
    case W4A8TileConfig::kSm90_Mma_128x64x128_SplitK: return "sm90_mma_128x64x128_splitk";
    case W4A8TileConfig::kSm90_Mma_128x64x256_SplitK: return "sm90_mma_128x64x256_splitk";
    case W4A8TileConfig::kSm90_128x64x128_CoopStreamK: return "sm90_128x64x128_coop_streamk";
    case W4A8TileConfig::kSm90_128x32x128_CoopStreamK: return "sm90_128x32x128_coop_streamk";
    case W4A8TileConfig::kSm90_128x256x128_Coop: return "sm90_128x256x128_coop";
    case W4A8TileConfig::kSm90_128x256x128_Coop_C2x1: return "sm90_128x256x128_coop_c2x1";
    case W4A8TileConfig::kSm90_128x224x128_Coop_C2x1: return "sm90_128x224x128_coop_c2x1";
    default: return "unknown";
  }
}

// Tiles are (weight rows) x (tokens). Fitted to H100 sweeps with every config forced (notes/w4a8.md;
// the seventeenth session's sweep: notes/h100_2026-11-23g/).
// - Many tokens: the cooperative tiles are fastest per unit of work (two warp groups share one
//   tile: half the accumulator registers per thread, which the register-sourced weights need),
//   and 256 tokens per tile beat 128 wherever those tiles still fill 2/3 of a wave (each widened
//   weight fragment feeds twice the MMAs: FLUX 4096x3072->3072 55.7 vs 75.9 us), unless the
//   128-token tiles fill their last wave better by 8 points or more (wave efficiency = tiles /
//   (waves x SMs)). Since the widening takes 5 ops (widen_int4_times16.cuh) the 128x128 tile is
//   as fast per unit of work on full waves, so the tail decides (notes/h100_2026-11-24e call 4,
//   every config forced: FLUX 4608x3072->3072 64.3 vs 73.5 us, 432 tiles of 256 fill 82% of 4
//   waves, 864 of 128 fill 94% of 7; 4608x3072->12288 keeps 128x256: 249.5 vs 265.1, 94% vs 97%;
//   SD3 4096x6144->1536 51.0 vs 64.4). Where the 256-token tiles make two waves or more, they run
//   in clusters of two row tiles that share the activation tile by TMA multicast (the activation
//   tile is most of a CTA's L2 reads; notes/h100_2026-11-24g call 3, every config forced: 2-3%
//   faster without the branch, 2-6% with it, e.g. 4096x3072->3072 + r32 60.4 vs 64.2 us; the
//   128x128 tile gained nothing from clusters, and 333x1536->6144 lost). A ping-pong CTA
//   works on two smaller tiles at once, so where the 128-token tiles would leave SMs idle the
//   smaller ones win.
// - Few tokens, the weights' bytes are the cost and the work must reach every SM:
//   * <= 16 tokens, and 17..32 on layers of at most 4096x4096 or with deep K: the mma.sync
//     split-K kernel (K split over a cluster; 128-K stages for 3072x3072, 256-K ones above).
//   * 17..32 tokens on wide layers (N > 4096, K <= 4096): the 128x32 wgmma tile with stream-K
//     (3072->12288 at 32 tokens: 13.0 vs 17.4 us).
//   * 33..64 tokens: the 128x64 wgmma tile with stream-K, except on layers of at most 4096x4096,
//     where the 64x64 ping-pong tile is fastest (each SM's share of K is too short to pay for
//     the stream-K fixup), and on deep narrow layers (K > 4096, N <= 4096), where 128x32 with
//     stream-K is (two token tiles, half the accumulators per CTA: 12288->3072 at 48/64 tokens
//     18.5-18.8 vs 19.0-19.3 us, notes/h100_2026-11-24f call 2).
W4A8TileConfig w4a8_choose_tile_config(int M, int N, int K, int sm_count) {
  const bool small_layer = N <= 4096 && K <= 4096;
  const W4A8TileConfig splitk =
      small_layer ? W4A8TileConfig::kSm90_Mma_128x64x128_SplitK : W4A8TileConfig::kSm90_Mma_128x64x256_SplitK;
  if (M <= 16) return splitk;
  if (M <= 32) return !small_layer && K <= 4096 ? W4A8TileConfig::kSm90_128x32x128_CoopStreamK : splitk;
  if (M <= 64) {
    if (small_layer) return W4A8TileConfig::kSm90_64x64x128_Pingpong;
    return K > 4096 && N <= 4096 ? W4A8TileConfig::kSm90_128x32x128_CoopStreamK : W4A8TileConfig::kSm90_128x64x128_CoopStreamK;
  }
  const long sms = sm_count > 0 ? sm_count : 132;
  const long row_tiles = (N + 127) / 128;
  const long tiles_256 = long((M + 255) / 256) * row_tiles;
  const long tiles_128 = long((M + 127) / 128) * row_tiles;
  const long tiles_64 = long((M + 63) / 64) * ((N + 63) / 64);
  // The share of the last wave's SMs that have a tile (1: the tiles fill whole waves).
  const auto wave_efficiency = [sms](long tiles) { return double(tiles) / double((tiles + sms - 1) / sms * sms); };
  if (3 * tiles_256 >= 2 * sms) {
    // Short K (each tile's mainloop is short, so its epilogue, the low-rank branch's most of all,
    // weighs more), an even number of row tiles and 224-token tiles that fill the waves about as
    // well as 128-token ones (counting the tokens past M in the last tile as idle) and clearly
    // better than 256-token ones: the clustered 128x224 tile, with half as many epilogues as
    // 128x128 (FLUX 4608x3072->3072: 504 tiles fill 95% of 4 waves; call 5, every config forced:
    // + r32 71.7 us vs 75.1 on 128x128 and 78.9 on 128x256 c2x1, without the branch 65.8 vs 65.7).
    const long tiles_224 = long((M + 223) / 224) * row_tiles;
    const double used_224 = wave_efficiency(tiles_224) * M / (double((M + 223) / 224) * 224);
    if (K <= 4096 && row_tiles % 2 == 0 && used_224 >= wave_efficiency(tiles_128) - 0.01 &&
        used_224 >= wave_efficiency(tiles_256) + 0.08)
      return W4A8TileConfig::kSm90_128x224x128_Coop_C2x1;
    if (wave_efficiency(tiles_128) >= wave_efficiency(tiles_256) + 0.08) return W4A8TileConfig::kSm90_128x128x128_Coop;
    // Two waves or more of 256-token tiles over an even number of row tiles: clusters of two row
    // tiles, which read each activation tile from L2 once.
    return tiles_256 >= 2 * sms && row_tiles % 2 == 0 ? W4A8TileConfig::kSm90_128x256x128_Coop_C2x1
                                                       : W4A8TileConfig::kSm90_128x256x128_Coop;
  }
  if (tiles_128 >= 2 * sms || (3 * tiles_128 >= 2 * sms && tiles_128 <= sms)) return W4A8TileConfig::kSm90_128x128x128_Coop;
  if (tiles_64 <= sms) return W4A8TileConfig::kSm90_64x64x128_Pingpong;
  return W4A8TileConfig::kSm90_64x128x128_Pingpong;
}

bool w4a8_kernels_compiled() {
#ifdef QENGINE_HAS_SM90
  return true;
#else
  return false;
#endif
}

namespace {
struct Entry {
  cudaError_t (*run)(const W4A8GemmParams&, cudaStream_t);
  size_t (*workspace)(const W4A8GemmParams&);
};

// Which kernel of a config serves the call: plain, the [M, N] low-rank product as the C operand
// (p.lowrank), or the branch itself (p.lowrank_act: the split-K kernels; p.lowrank_act_out: the
// staged epilogue of the cooperative configs).
bool lookup(W4A8TileConfig c, const W4A8GemmParams& p, Entry* e) {
#ifdef QENGINE_HAS_SM90
  using namespace w4a8::sm90;
  const bool source = p.lowrank != nullptr, splitk_act = p.lowrank_act != nullptr,
             staged = p.lowrank_act_out != nullptr;
#define QENGINE_W4A8_ENTRY(NAME)                                                                     \
  *e = source ? Entry{NAME##_lowrank_run, NAME##_lowrank_workspace} : Entry{NAME##_run, NAME##_workspace}; \
  return !staged && !splitk_act
#define QENGINE_W4A8_ENTRY_STAGED(NAME)                                                          \
  if (staged) {                                                                                  \
    *e = Entry{NAME##_lowrank_staged_run, NAME##_lowrank_staged_workspace};                       \
    return true;                                                                                 \
  }                                                                                              \
  QENGINE_W4A8_ENTRY(NAME)
  switch (c) {
    case W4A8TileConfig::kSm90_128x128x128_Coop: QENGINE_W4A8_ENTRY_STAGED(w4a8_sm90_128x128x128_coop);
    case W4A8TileConfig::kSm90_64x128x128_Pingpong: QENGINE_W4A8_ENTRY(w4a8_sm90_64x128x128_pingpong);
    case W4A8TileConfig::kSm90_64x64x128_Pingpong: QENGINE_W4A8_ENTRY(w4a8_sm90_64x64x128_pingpong);
    case W4A8TileConfig::kSm90_128x64x128_CoopStreamK: QENGINE_W4A8_ENTRY(w4a8_sm90_128x64x128_coop_streamk);
    case W4A8TileConfig::kSm90_128x32x128_CoopStreamK: QENGINE_W4A8_ENTRY(w4a8_sm90_128x32x128_coop_streamk);
    case W4A8TileConfig::kSm90_128x256x128_Coop: QENGINE_W4A8_ENTRY_STAGED(w4a8_sm90_128x256x128_coop);
    case W4A8TileConfig::kSm90_128x256x128_Coop_C2x1: QENGINE_W4A8_ENTRY_STAGED(w4a8_sm90_128x256x128_coop_c2x1);
    case W4A8TileConfig::kSm90_128x224x128_Coop_C2x1: QENGINE_W4A8_ENTRY_STAGED(w4a8_sm90_128x224x128_coop_c2x1);
    case W4A8TileConfig::kSm90_Mma_128x64x128_SplitK:
      *e = Entry{w4a8_sm90_mma_128x64x128_splitk_run, w4a8_sm90_mma_128x64x128_splitk_workspace};
      return !staged;
    case W4A8TileConfig::kSm90_Mma_128x64x256_SplitK:
      *e = Entry{w4a8_sm90_mma_128x64x256_splitk_run, w4a8_sm90_mma_128x64x256_splitk_workspace};
      return !staged;
    default: return false;
  }
#undef QENGINE_W4A8_ENTRY_STAGED
#undef QENGINE_W4A8_ENTRY
#else
  (void)c; (void)p; (void)e;
  return false;
#endif
}

bool supported(const W4A8GemmParams& p) {
  return p.M >= 1 && p.N > 0 && p.K > 0 && p.K <= kW4A8MaxK && p.N % 16 == 0 && p.K % 32 == 0 && p.lda >= p.K && p.ldo >= p.N &&
         p.lda % 16 == 0 && p.ldo % 8 == 0 && (p.out_type == FloatType::kBF16 || p.out_type == FloatType::kFP16);
}
}  // namespace

size_t w4a8_gemm_workspace_bytes(const W4A8GemmParams& p, W4A8TileConfig c) {
  Entry e{};
  if (!supported(p) || !lookup(c, p, &e)) return 0;
  return e.workspace(p);
}

bool w4a8_config_fuses_lowrank(W4A8TileConfig c, int rank) {
  if (rank <= 0 || rank % 16 != 0) return false;
  if (c == W4A8TileConfig::kSm90_Mma_128x64x128_SplitK || c == W4A8TileConfig::kSm90_Mma_128x64x256_SplitK) return true;
  return (c == W4A8TileConfig::kSm90_128x256x128_Coop || c == W4A8TileConfig::kSm90_128x128x128_Coop ||
          c == W4A8TileConfig::kSm90_128x256x128_Coop_C2x1 || c == W4A8TileConfig::kSm90_128x224x128_Coop_C2x1) &&
         rank <= kW4A8StagedMaxRank;
}

cudaError_t w4a8_gemm(const W4A8GemmParams& p, W4A8TileConfig c, cudaStream_t stream) {
  if (!supported(p)) return cudaErrorInvalidValue;
  const int branches = (p.lowrank != nullptr) + (p.lowrank_act != nullptr) + (p.lowrank_act_out != nullptr);
  if (branches > 1 || ((p.lowrank_act != nullptr || p.lowrank_act_out != nullptr) && !w4a8_config_fuses_lowrank(c, p.rank)))
    return cudaErrorInvalidValue;
  Entry e{};
  if (!lookup(c, p, &e)) return cudaErrorNotSupported;
  return e.run(p, stream);
}

}  // namespace qengine
