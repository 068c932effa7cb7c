// Named tile configs, the (M, N, K) heuristic, and the launcher routing a config to its kernel.
#include <cstdint>

#include "kernels.h"
#include "qengine/w8a8_gemm.h"

namespace qengine {
namespace {

using RunFn = cudaError_t (*)(const W8A8GemmParams&, cudaStream_t);
using WorkspaceFn = size_t (*)(const W8A8GemmParams&);

struct Entry {
  RunFn run;
  WorkspaceFn workspace;
};

#define QENGINE_ENTRY(NS, NAME) Entry{NS::NAME##_run, NS::NAME##_workspace}

// The fused low-rank variant of a config, or {nullptr, nullptr} (sm90 configs only).
Entry lowrank_entry(W8A8TileConfig c, QuantType t) {
  const bool fp8 = t == QuantType::kFP8E4M3;
  switch (c) {
#ifdef QENGINE_HAS_SM90
    case W8A8TileConfig::kSm90_64x64x128_Pingpong_C1x4:
      return fp8 ? QENGINE_ENTRY(sm90, fp8_sm90_64x64x128_pingpong_c1x4_lowrank)
                 : QENGINE_ENTRY(sm90, int8_sm90_64x64x128_pingpong_c1x4_lowrank);
    case W8A8TileConfig::kSm90_128x128x128_Pingpong_C2x1:
      return fp8 ? QENGINE_ENTRY(sm90, fp8_sm90_128x128x128_pingpong_c2x1_lowrank)
                 : QENGINE_ENTRY(sm90, int8_sm90_128x128x128_pingpong_c2x1_lowrank);
    case W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2:
      return fp8 ? QENGINE_ENTRY(sm90, fp8_sm90_128x128x128_pingpong_c1x2_lowrank)
                 : QENGINE_ENTRY(sm90, int8_sm90_128x128x128_pingpong_c1x2_lowrank);
    case W8A8TileConfig::kSm90_64x160x128_Pingpong_C1x1:
      return fp8 ? QENGINE_ENTRY(sm90, fp8_sm90_64x160x128_pingpong_c1x1_lowrank)
                 : QENGINE_ENTRY(sm90, int8_sm90_64x160x128_pingpong_c1x1_lowrank);
#endif
    default:
      break;
  }
  (void)fp8;
  return {nullptr, nullptr};
}

// The kernel for (config, input type), or {nullptr, nullptr} where this build has none.
Entry entry(W8A8TileConfig c, QuantType t) {
  const bool fp8 = t == QuantType::kFP8E4M3;
  switch (c) {
#ifdef QENGINE_HAS_SM90
    case W8A8TileConfig::kSm90_64x64x128_Pingpong_C1x4:
      return fp8 ? QENGINE_ENTRY(sm90, fp8_sm90_64x64x128_pingpong_c1x4)
                 : QENGINE_ENTRY(sm90, int8_sm90_64x64x128_pingpong_c1x4);
    case W8A8TileConfig::kSm90_128x128x128_Pingpong_C2x1:
      return fp8 ? QENGINE_ENTRY(sm90, fp8_sm90_128x128x128_pingpong_c2x1)
                 : QENGINE_ENTRY(sm90, int8_sm90_128x128x128_pingpong_c2x1);
    case W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2:
      return fp8 ? QENGINE_ENTRY(sm90, fp8_sm90_128x128x128_pingpong_c1x2)
                 : QENGINE_ENTRY(sm90, int8_sm90_128x128x128_pingpong_c1x2);
    case W8A8TileConfig::kSm90_64x160x128_Pingpong_C1x1:
      return fp8 ? QENGINE_ENTRY(sm90, fp8_sm90_64x160x128_pingpong_c1x1)
                 : QENGINE_ENTRY(sm90, int8_sm90_64x160x128_pingpong_c1x1);
#endif
    case W8A8TileConfig::kSm80_32x64x128:
#ifdef QENGINE_HAS_SM89_FP8
      if (fp8) return QENGINE_ENTRY(sm80, fp8_sm80_32x64x128);
#endif
#ifdef QENGINE_HAS_SM80
      if (!fp8) return QENGINE_ENTRY(sm80, int8_sm80_32x64x128);
#endif
      break;
    case W8A8TileConfig::kSm80_128x128x64:
#ifdef QENGINE_HAS_SM89_FP8
      if (fp8) return QENGINE_ENTRY(sm80, fp8_sm80_128x128x64);
#endif
#ifdef QENGINE_HAS_SM80
      if (!fp8) return QENGINE_ENTRY(sm80, int8_sm80_128x128x64);
#endif
      break;
    default:
      break;
  }
  (void)fp8;
  return {nullptr, nullptr};
}

#undef QENGINE_ENTRY

}  // namespace

const char* tile_config_name(W8A8TileConfig c) {
  switch (c) {
    case W8A8TileConfig::kSm90_64x64x128_Pingpong_C1x4: return "sm90_64x64x128_pingpong_c1x4";
    case W8A8TileConfig::kSm90_128x128x128_Pingpong_C2x1: return "sm90_128x128x128_pingpong_c2x1";
    case W8A8TileConfig::kSm80_32x64x128: return "sm80_32x64x128";
    case W8A8TileConfig::kSm80_128x128x64: return "sm80_128x128x64";
    case W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2: return "sm90_128x128x128_pingpong_c1x2";
    case W8A8TileConfig::kSm90_64x160x128_Pingpong_C1x1: return "sm90_64x160x128_pingpong_c1x1";
    default: return "unknown";
  }
}

bool tile_config_is_sm90(W8A8TileConfig c) {
  return c == W8A8TileConfig::kSm90_64x64x128_Pingpong_C1x4 || c == W8A8TileConfig::kSm90_128x128x128_Pingpong_C2x1 ||
         c == W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2 || c == W8A8TileConfig::kSm90_64x160x128_Pingpong_C1x1;
}

void choose_schedule(int M, int N, int K, W8A8TileConfig c, QuantType t, int* raster, int* swizzle) {
  // From the H100 sweep (bench_gemm.py --sweep-schedules, notes/h100_2026-11-22e, call 5): the
  // cluster-along-N config is best walked along M; the cluster-along-M one in CUTLASS's order
  // (along N when there are more M tiles, which is where choose_tile_config keeps it for FP8).
  // Swizzles of 2-4 were within noise of 1 and 8 lost up to 60%.
  (void)M, (void)N, (void)K, (void)t;
  *raster = c == W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2 ? 1 : 0;
  *swizzle = 1;
}

// SMs the heuristic plans waves for: H100 SXM and H200 (an H100 PCIe has 114; its plans are
// then a little off, never wrong).
constexpr int64_t kSms = 132;

W8A8TileConfig choose_tile_config(int M, int N, int K, QuantType t, bool sm90) {
  if (!sm90) return M <= 64 ? W8A8TileConfig::kSm80_32x64x128 : W8A8TileConfig::kSm80_128x128x64;
  // Thresholds from the H200 sweep over every model shape (notes/kernels.md, 132 SMs).
  const int64_t tiles_128 = ((M + 127) / 128) * static_cast<int64_t>((N + 127) / 128);
  // Tiny INT8 problems (a few microseconds): the mma.sync kernel has the lowest fixed cost
  // (no cluster launch, no TMA descriptors) and wins by 5-15% there.
  if (t == QuantType::kInt8 && M <= 128 && K <= 1536 && tiles_128 < 66 &&
      tile_config_compiled(W8A8TileConfig::kSm80_32x64x128, t))
    return W8A8TileConfig::kSm80_32x64x128;
  // Few tokens, or under half a wave of 128x128 tiles: 64x64 tiles spread the work over 4x as
  // many SMs (SD1.5/SDXL text and low-resolution layers, SD3 text stream).
  if (M <= 64 || tiles_128 < 66) return W8A8TileConfig::kSm90_64x64x128_Pingpong_C1x4;
  // 64x160 tiles where 128x128 ones leave much of their last wave idle and 64x160 ones do not
  // (SDXL M = 1024 x N = 1280: 80 tiles keep 61% of 132 SMs busy, 128 tiles of 64x160 97%), and
  // only for deep K: the H100 sweep (notes/h100_2026-11-23b, call 4) had 64x160 2-10% faster at
  // K = 2560-5120 (1024x5120->1280: 16.9 vs 17.3 us; 4096x2560->640: 16.3 vs 18.1) but up to 10%
  // slower at K <= 1280, where the few k-steps per tile leave it latency-bound (1024x1280->1280:
  // 8.1 vs 7.8 us; SD1.5 4096x320->320: 6.4 vs 5.8). The share of SM time doing useful work:
  const auto busy = [&](int64_t tm, int64_t tn) {
    const int64_t tiles = ((M + tm - 1) / tm) * ((N + tn - 1) / tn);
    const int64_t waves = (tiles + kSms - 1) / kSms;
    return static_cast<double>(M) * N / (static_cast<double>(waves) * kSms * tm * tn);
  };
  if (K >= 2048 && busy(64, 160) > busy(128, 128) + 0.2 &&
      tile_config_compiled(W8A8TileConfig::kSm90_64x160x128_Pingpong_C1x1, t))
    return W8A8TileConfig::kSm90_64x160x128_Pingpong_C1x1;
  // Everything else: 128x128 ping-pong (the two consumer warpgroups overlap one tile's epilogue
  // with the other's mainloop). FLUX image stream: 1300-1400 TOPS. The cluster along N (two CTAs
  // of one M block share its A tile by TMA multicast, as cuBLAS's FP8 kernel does), walked along
  // M, won the H100 sweep of tile orders (notes/h100_2026-11-22e, call 5) for INT8 on every FLUX
  // shape but one (-2%) by up to 13%, and for FP8 where there are more N tiles than M tiles
  // (4608x3072->12288: 7%); FP8 with more M tiles stays on the cluster along M.
  const int64_t tiles_m = (M + 127) / 128, tiles_n = (N + 127) / 128;
  if ((t == QuantType::kInt8 || tiles_n > tiles_m) &&
      tile_config_compiled(W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2, t))
    return W8A8TileConfig::kSm90_128x128x128_Pingpong_C1x2;
  return W8A8TileConfig::kSm90_128x128x128_Pingpong_C2x1;
}

bool tile_config_compiled(W8A8TileConfig c, QuantType t) { return entry(c, t).run != nullptr; }

bool tile_config_has_lowrank(W8A8TileConfig c, QuantType t) { return lowrank_entry(c, t).run != nullptr; }

size_t w8a8_gemm_workspace_bytes(const W8A8GemmParams& p, W8A8TileConfig c) {
  Entry e = p.rank > 0 ? lowrank_entry(c, p.in_type) : entry(c, p.in_type);
  return e.workspace ? e.workspace(p) : 0;
}

cudaError_t w8a8_gemm(const W8A8GemmParams& p, W8A8TileConfig c, cudaStream_t stream) {
  if (p.M <= 0 || p.N <= 0 || p.K <= 0 || p.K % 16 || p.N % 8) return cudaErrorInvalidValue;
  if (p.out_type != FloatType::kBF16 && p.out_type != FloatType::kFP16) return cudaErrorInvalidValue;
  if (p.raster < 0 || p.raster > 2 || (p.swizzle != 1 && p.swizzle != 2 && p.swizzle != 4 && p.swizzle != 8))
    return cudaErrorInvalidValue;
  if (p.rank < 0 || p.rank % 8 ||
      (p.rank > 0 && (p.lowrank_act == nullptr || p.lora_up == nullptr ||
                      reinterpret_cast<uintptr_t>(p.lowrank_act) % 16 || reinterpret_cast<uintptr_t>(p.lora_up) % 16)))
    return cudaErrorInvalidValue;
  Entry e = p.rank > 0 ? lowrank_entry(c, p.in_type) : entry(c, p.in_type);
  if (e.run == nullptr) return cudaErrorNotSupported;
  return e.run(p, stream);
}

}  // namespace qengine
