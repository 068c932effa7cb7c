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
    default: return "unknown";
  }
}

// Tiles are (weight rows) x (tokens). Measured on an H100 (notes/w4a8.md, every config forced
// over FLUX/SD3 shapes and an M sweep): the cooperative 128x128 tile is fastest per unit of work
// (two warp groups share one tile: half the accumulator registers per thread, which the
// register-sourced weights need), but a ping-pong CTA works on two smaller tiles at once, so
// where 128x128 tiles would leave SMs idle the smaller ones win. This ladder picked the
// fastest config within 5% on 50 of the 51 shapes measured (in-sample).
//
// Few tokens go to the mma.sync split-K kernel: there the weights' bytes are the cost, and it
// spreads every layer's weight stream over all SMs (K split over a cluster) where the wgmma
// tiles of 64 rows left most SMs idle at N = 3072. Measured (notes/w4a8.md, session 7): it is
// the fastest config at M <= 32 on every FLUX K/N (128-K stages for 3072x3072, 256-K ones for
// the larger layers); at 33..64 tokens its 64-token CTAs are register-bound (2 per SM) and only
// deep K (12288) still favours it, else the 64x64 wgmma tile wins.
W4A8TileConfig w4a8_choose_tile_config(int M, int N, int K, int sm_count) {
  const bool small_layer = N <= 4096 && K <= 4096;
  if (M <= 32)
    return small_layer ? W4A8TileConfig::kSm90_Mma_128x64x128_SplitK : W4A8TileConfig::kSm90_Mma_128x64x256_SplitK;
  if (M <= 64)
    return K >= 8192 ? W4A8TileConfig::kSm90_Mma_128x64x128_SplitK : W4A8TileConfig::kSm90_64x64x128_Pingpong;
  const long sms = sm_count > 0 ? sm_count : 132;
  const long tiles_128 = long((M + 127) / 128) * ((N + 127) / 128);
  const long tiles_64 = long((M + 63) / 64) * ((N + 63) / 64);
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

bool lookup(W4A8TileConfig c, bool lowrank, Entry* e) {
#ifdef QENGINE_HAS_SM90
  using namespace w4a8::sm90;
#define QENGINE_W4A8_ENTRY(NAME) *e = lowrank ? Entry{NAME##_lowrank_run, NAME##_lowrank_workspace} : Entry{NAME##_run, NAME##_workspace}
  switch (c) {
    case W4A8TileConfig::kSm90_128x128x128_Coop: QENGINE_W4A8_ENTRY(w4a8_sm90_128x128x128_coop); return true;
    case W4A8TileConfig::kSm90_64x128x128_Pingpong: QENGINE_W4A8_ENTRY(w4a8_sm90_64x128x128_pingpong); return true;
    case W4A8TileConfig::kSm90_64x64x128_Pingpong: QENGINE_W4A8_ENTRY(w4a8_sm90_64x64x128_pingpong); return true;
    case W4A8TileConfig::kSm90_128x64x128_CoopStreamK: QENGINE_W4A8_ENTRY(w4a8_sm90_128x64x128_coop_streamk); return true;
    case W4A8TileConfig::kSm90_128x32x128_CoopStreamK: QENGINE_W4A8_ENTRY(w4a8_sm90_128x32x128_coop_streamk); return true;
    case W4A8TileConfig::kSm90_128x256x128_Coop: QENGINE_W4A8_ENTRY(w4a8_sm90_128x256x128_coop); return true;
    case W4A8TileConfig::kSm90_Mma_128x64x128_SplitK:
      *e = Entry{w4a8_sm90_mma_128x64x128_splitk_run, w4a8_sm90_mma_128x64x128_splitk_workspace};
      return true;
    case W4A8TileConfig::kSm90_Mma_128x64x256_SplitK:
      *e = Entry{w4a8_sm90_mma_128x64x256_splitk_run, w4a8_sm90_mma_128x64x256_splitk_workspace};
      return true;
    default: return false;
  }
#undef QENGINE_W4A8_ENTRY
#else
  (void)c; (void)lowrank; (void)e;
  return false;
#endif
}

bool supported(const W4A8GemmParams& p) {
  return p.M >= 1 && p.N > 0 && p.K > 0 && p.N % 16 == 0 && p.K % 32 == 0 && p.lda >= p.K && p.ldo >= p.N &&
         p.lda % 16 == 0 && p.ldo % 8 == 0 && (p.out_type == FloatType::kBF16 || p.out_type == FloatType::kFP16);
}
}  // namespace

size_t w4a8_gemm_workspace_bytes(const W4A8GemmParams& p, W4A8TileConfig c) {
  Entry e{};
  if (!supported(p) || !lookup(c, p.lowrank != nullptr, &e)) return 0;
  return e.workspace(p);
}

bool w4a8_config_fuses_lowrank(W4A8TileConfig c) {
  return c == W4A8TileConfig::kSm90_Mma_128x64x128_SplitK || c == W4A8TileConfig::kSm90_Mma_128x64x256_SplitK;
}

cudaError_t w4a8_gemm(const W4A8GemmParams& p, W4A8TileConfig c, cudaStream_t stream) {
  if (!supported(p)) return cudaErrorInvalidValue;
  if (p.lowrank_act != nullptr && !w4a8_config_fuses_lowrank(c)) return cudaErrorInvalidValue;
  Entry e{};
  if (!lookup(c, p.lowrank != nullptr, &e)) return cudaErrorNotSupported;
  return e.run(p, stream);
}

}  // namespace qengine
