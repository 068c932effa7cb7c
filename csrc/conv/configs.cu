// Named conv tile configs, the heuristic, and the sm90 launcher routing a config to its kernel.
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
    default: return "unknown";
  }
}

bool conv_tile_config_is_sm90(QConvTileConfig c) {
  return c == QConvTileConfig::kSm90_128x128x128_S4 || c == QConvTileConfig::kSm90_128x160x128_S4 ||
         c == QConvTileConfig::kSm90_64x160x128_S4;
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

QConvTileConfig choose_conv_tile_config(int64_t M, int N, int64_t K, int sm_count) {
  (void)K;
  // One CTA per SM in every config, so the busiest SM runs ceil(tiles / SMs) tiles back to back:
  // modelled time = that count * tile area * relative cost of a MAC in the config (the 64-row
  // tile feeds wgmma from shared memory less efficiently: each 64xN wgmma re-reads the B tile
  // for half the MACs). The factors are first estimates; notes/conv.md has the sweep.
  struct Option {
    QConvTileConfig c;
    int tm, tn;
    double mac_cost;
  };
  const Option options[] = {{QConvTileConfig::kSm90_128x128x128_S4, 128, 128, 1.0},
                            {QConvTileConfig::kSm90_128x160x128_S4, 128, 160, 1.0},
                            {QConvTileConfig::kSm90_64x160x128_S4, 64, 160, 1.15}};
  QConvTileConfig best = options[0].c;
  double best_cost = 0;
  for (const auto& o : options) {
    const int64_t tiles = ((M + o.tm - 1) / o.tm) * ((N + o.tn - 1) / o.tn);
    const int64_t per_sm = (tiles + sm_count - 1) / sm_count;
    const double cost = double(per_sm) * o.tm * o.tn * o.mac_cost;
    if (best_cost == 0 || cost < best_cost) {  // ties keep the earlier (more general) config
      best = o.c;
      best_cost = cost;
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
  if (p.C % 16 != 0 || p.w_channels % 16 != 0 || p.O % 8 != 0 || p.w_channels < p.C) return cudaErrorInvalidValue;
  return e.run(p, stream);
}

}  // namespace qengine
