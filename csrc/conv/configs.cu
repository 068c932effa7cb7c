// Named conv tile configs, the heuristic, and the sm90 launcher routing a config to its kernel.
#include <algorithm>
#include <cstdint>

#include "kernels.h"
#include "qengine/conv2d.h"

namespace qengine {
namespace {

using RunFn = cudaError_t (*)(const QConv2dParams&, cudaStream_t);
using WorkspaceFn = size_t (*)(const QConv2dParams&);

struct Entry {
  RunFn run;
  WorkspaceFn workspace;
};

#define QENGINE_ENTRY(NAME) Entry{conv_sm90::NAME##_run, conv_sm90::NAME##_workspace}

Entry sm90_entry(QConvTileConfig c, QuantType t) {
#ifdef QENGINE_HAS_SM90
  const bool fp8 = t == QuantType::kFP8E4M3;
  switch (c) {
    case QConvTileConfig::kSm90_128x128x128_S4:
      return fp8 ? QENGINE_ENTRY(fp8_conv_sm90_128x128x128_s4) : QENGINE_ENTRY(int8_conv_sm90_128x128x128_s4);
    case QConvTileConfig::kSm90_128x160x128_S4:
      return fp8 ? QENGINE_ENTRY(fp8_conv_sm90_128x160x128_s4) : QENGINE_ENTRY(int8_conv_sm90_128x160x128_s4);
    case QConvTileConfig::kSm90_64x160x128_S4:
      return fp8 ? QENGINE_ENTRY(fp8_conv_sm90_64x160x128_s4) : QENGINE_ENTRY(int8_conv_sm90_64x160x128_s4);
    case QConvTileConfig::kSm90_256x128x128_S4:
      return fp8 ? QENGINE_ENTRY(fp8_conv_sm90_256x128x128_s4) : QENGINE_ENTRY(int8_conv_sm90_256x128x128_s4);
    case QConvTileConfig::kSm90_256x160x128_S4:
      return fp8 ? QENGINE_ENTRY(fp8_conv_sm90_256x160x128_s4) : QENGINE_ENTRY(int8_conv_sm90_256x160x128_s4);
    case QConvTileConfig::kSm90_256x128x128_C1x2_S4:
      return fp8 ? QENGINE_ENTRY(fp8_conv_sm90_256x128x128_c1x2_s4) : QENGINE_ENTRY(int8_conv_sm90_256x128x128_c1x2_s4);
    default:
      break;
  }
#endif
  (void)c;
  (void)t;
  return {nullptr, nullptr};
}

#undef QENGINE_ENTRY

}  // namespace

const char* conv_tile_config_name(QConvTileConfig c) {
  switch (c) {
    case QConvTileConfig::kSm90_128x128x128_S4: return "sm90_128x128x128_s4";
    case QConvTileConfig::kSm90_128x160x128_S4: return "sm90_128x160x128_s4";
    case QConvTileConfig::kSm90_64x160x128_S4: return "sm90_64x160x128_s4";
    case QConvTileConfig::kIm2colGemmSm80: return "im2col_gemm_sm80";
    case QConvTileConfig::kSm90_256x128x128_S4: return "sm90_256x128x128_s4";
    case QConvTileConfig::kSm90_256x160x128_S4: return "sm90_256x160x128_s4";
    case QConvTileConfig::kSm90_256x128x128_C1x2_S4: return "sm90_256x128x128_c1x2_s4";
    default: return "unknown";
  }
}

bool conv_tile_config_is_sm90(QConvTileConfig c) {
  return c == QConvTileConfig::kSm90_128x128x128_S4 || c == QConvTileConfig::kSm90_128x160x128_S4 ||
         c == QConvTileConfig::kSm90_64x160x128_S4 || c == QConvTileConfig::kSm90_256x128x128_S4 ||
         c == QConvTileConfig::kSm90_256x160x128_S4 || c == QConvTileConfig::kSm90_256x128x128_C1x2_S4;
}

bool conv_tile_config_compiled(QConvTileConfig c, QuantType t) {
  if (conv_tile_config_is_sm90(c)) return sm90_entry(c, t).run != nullptr;
  if (c != QConvTileConfig::kIm2colGemmSm80) return false;
#if defined(QENGINE_HAS_SM89_FP8)
  return true;
#elif defined(QENGINE_HAS_SM80)
  return t == QuantType::kInt8;
#else
  return false;
#endif
}

QConvPlan choose_conv_plan(int64_t M, int N, int64_t K, int sm_count) {
  // Modelled time of a plan = max(compute, L2), plus a fix-up for split plans; the cheapest wins.
  //
  // compute = waves x tile width x k blocks x weight: a wave of a one-warpgroup config costs like
  // one 128-row tile of its width per SM (a 64-row tile runs about as long as a 128-row one: the
  // per-k-block pipeline, not the MMAs, sets its pace; two 64x160 CTAs fit per SM, so its waves
  // hold 2 x SMs tiles). The 256-row tiles (two consumer warpgroups) carry a fitted weight.
  //
  // L2 = kL2PerRow x every CTA's A and B rows (tm + tn per k block) spread over the SMs: at 80
  // busy SMs a 128x128 tile's k block already moves ~94 GB/s per SM out of L2, and more CTAs do
  // not add L2 bandwidth (notes/conv.md, sessions 9 and 10). It is what favours bigger tiles.
  // With clusters of two along N (256x128 c1x2) a CTA reads half of its activation rows (tm / 2).
  //
  // Split-K plans (S CTAs per tile, S <= 4; one-warpgroup tiles and the clustered 256x128 only)
  // divide a CTA's k blocks by S and pay a fix-up (memset, partial stores, the last split's reads)
  // of kFixupBase + kFixupPerPartial x (S - 1) k blocks.
  //
  // Fitted on H100 sweeps of every config x S in {1, 2, 3, 4}: the five configs on the SDXL 3x3
  // convs at batch 1 (session 10), and the session-9 sweep of the three one-warpgroup configs over
  // the SD1.5 and SDXL convs (which must not get worse: +0.3% there). Held out, SDXL 3x3 at batch
  // 2 and SDXL 1x1 at batch 1: the picks take 6-7% less time than the session-9 model's, within
  // 0.1% and 0.7% of the best plans; the full benchmark of every SD conv: 3.5-4% less on SDXL
  // (notes/h100_2026-11-22i/README.md). The clustered 256x128 (session 11) has the plain one's
  // weight; in its sweep its split plans won the 1280-channel convs at 32x32 at batch 1
  // (notes/h100_2026-11-23/README.md).
  constexpr int64_t kFixupBase = 12, kFixupPerPartial = 4, kMaxSplits = 4;
  constexpr double kL2PerRow = 0.85;
  struct Option {
    QConvTileConfig c;
    int tm, tn, ctas_per_sm;
    double weight;
    int cluster_n;               // CTAs along N sharing (multicasting) the activation tile
    int min_splits, max_splits;  // the split-K counts this option may run at
  };
  // The unclustered 256-row tiles run unsplit: split, they won the fitted 1280-channel convs at
  // 32x32 by 5-6% in one sweep, but not in the next full benchmark (39.0 vs 38.7 us unsplit
  // 128x128), and lost 11-15% on convs outside the fit (SDXL 32x32x1920, SD1.5 64x64x960, session 10).
  // Their clustered twin runs split only: unsplit it timed like the plain 256x128 (+-2%, session 11).
  const Option options[] = {{QConvTileConfig::kSm90_128x128x128_S4, 128, 128, 1, 1.0, 1, 1, kMaxSplits},
                            {QConvTileConfig::kSm90_128x160x128_S4, 128, 160, 1, 1.0, 1, 1, kMaxSplits},
                            {QConvTileConfig::kSm90_64x160x128_S4, 64, 160, 2, 1.0, 1, 1, kMaxSplits},
                            {QConvTileConfig::kSm90_256x128x128_S4, 256, 128, 1, 1.9, 1, 1, 1},
                            {QConvTileConfig::kSm90_256x160x128_S4, 256, 160, 1, 2.7, 1, 1, 1},
                            {QConvTileConfig::kSm90_256x128x128_C1x2_S4, 256, 128, 1, 1.9, 2, 2, kMaxSplits}};
  const int64_t sms = sm_count > 0 ? sm_count : 132;
  const int64_t k_blocks = K > 0 ? (K + 127) / 128 : 1;  // BLK_K = 128 for every config
  QConvPlan best{options[0].c, 1};
  double best_cost = 0;
  for (int64_t splits = 1; splits <= kMaxSplits && splits <= k_blocks; ++splits) {
    for (const auto& o : options) {
      if (splits < o.min_splits || splits > o.max_splits) continue;
      // Whole clusters only: a cluster running past the last column of tiles still does all its
      // MMAs (on zero-filled tiles), which the sweep showed costs what the model does not count.
      const int64_t n_tiles = (N + o.tn - 1) / o.tn;
      if (n_tiles % o.cluster_n != 0) continue;
      const int64_t ctas = ((M + o.tm - 1) / o.tm) * n_tiles * splits;
      const int64_t waves = (ctas + sms * o.ctas_per_sm - 1) / (sms * o.ctas_per_sm);
      // A split plan must fit in one wave: then every split is resident while the last one waits
      // for the others (conv2d_splitk.cuh), whatever order the blocks are dispatched in. (No split
      // plan of the fitted sweeps needed more.)
      if (splits > 1 && waves > 1) continue;
      const int64_t blocks = (k_blocks + splits - 1) / splits;  // per CTA
      const double compute = double(waves * o.tn * blocks) * o.weight;
      const double l2 = kL2PerRow * double(ctas * blocks * (o.tm / o.cluster_n + o.tn)) / double(sms);
      double cost = std::max(compute, l2);
      if (splits > 1) cost += double((kFixupBase + kFixupPerPartial * (splits - 1)) * o.tn);
      if (best_cost == 0 || cost < best_cost) {  // ties keep the earlier: fewer splits, the more general config
        best = {o.c, static_cast<int>(splits)};
        best_cost = cost;
      }
    }
  }
  return best;
}

size_t qconv2d_sm90_workspace_bytes(const QConv2dParams& p, QConvTileConfig c) {
  const Entry e = sm90_entry(c, p.in_type);
  return e.workspace ? e.workspace(p) : 0;
}

cudaError_t qconv2d_sm90(const QConv2dParams& p, QConvTileConfig c, cudaStream_t stream) {
  const Entry e = sm90_entry(c, p.in_type);
  if (e.run == nullptr) return cudaErrorNotSupported;
  if (p.C % 16 != 0 || p.w_channels % 16 != 0 || p.O % 8 != 0 || p.w_channels < p.C || p.splits > kMaxConvSplits)
    return cudaErrorInvalidValue;
  return e.run(p, stream);
}

}  // namespace qengine
