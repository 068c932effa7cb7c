// torch binding of w8a8_{int8,fp8}_gemm: checks, the arch dispatch of the family, launcher
// call; plus debug entry points (qengine._C.w8a8_gemm_with_config & co) to force a tile config.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "common.h"
#include "qengine/w8a8_gemm.h"

namespace qengine::bindings {
namespace {

struct GemmArgs {
  const char* op;
  QuantType in_type;
  at::ScalarType q_dtype;
};

GemmArgs gemm_args(QuantType t) {
  return t == QuantType::kInt8 ? GemmArgs{"w8a8_int8_gemm", t, at::kChar}
                               : GemmArgs{"w8a8_fp8_gemm", t, at::kFloat8_e4m3fn};
}

// The one arch-dispatch point of the W8A8 GEMM family: the sm_90a wgmma kernels where the GPU
// is sm_90 and they were compiled; else the mma.sync kernels (INT8: sm_80+, FP8: sm_89+);
// else an error naming the arch.
bool sm90_path(const GemmArgs& g, const at::Device& device) {
  const DeviceArch arch = device_arch(device);
  return arch.major == 9 && arch.minor == 0 && has_code_for(device, 90) &&
         tile_config_compiled(W8A8TileConfig::kSm90_128x128x128_Pingpong_C2x1, g.in_type);
}

W8A8TileConfig dispatch_config(const GemmArgs& g, const at::Device& device, int M, int N, int K) {
  if (sm90_path(g, device)) return choose_tile_config(M, N, K, g.in_type, true);
  const int min_cc = g.in_type == QuantType::kFP8E4M3 ? 89 : 80;
  const bool mma = has_code_for(device, min_cc) && tile_config_compiled(W8A8TileConfig::kSm80_128x128x64, g.in_type);
  QENGINE_CHECK(g.op, mma, "no kernel for ", device_arch_str(device), " in this build (compiled archs: ",
                compiled_archs_str(), "; ", g.in_type == QuantType::kFP8E4M3 ? "FP8 needs sm_89 or newer" : "INT8 needs sm_80 or newer",
                "); rebuild with QENGINE_CUDA_ARCHS including this GPU, or use backend='reference'");
  return choose_tile_config(M, N, K, g.in_type, false);
}

at::Tensor run_gemm(const GemmArgs& g, const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w,
                    const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
                    const std::optional<at::Tensor>& lowrank_act, const std::optional<at::Tensor>& lora_up,
                    at::ScalarType out_dtype, const W8A8TileConfig* forced, const int* forced_schedule = nullptr) {
  const char* op = g.op;
  const auto device = a.device();
  check_tensor(op, "a", a, device, {g.q_dtype}, {-1, -1});
  const int64_t M = a.size(0), K = a.size(1);
  QENGINE_CHECK(op, K > 0 && K % 16 == 0, "K=", K, " is not supported: K must be a positive multiple of 16");
  check_tensor(op, "a_scale", a_scale, device, {at::kFloat}, {M});
  check_tensor(op, "w", w, device, {g.q_dtype}, {-1, K});
  const int64_t N = w.size(0);
  QENGINE_CHECK(op, N > 0 && N % 8 == 0, "N=", N, " (rows of w) is not supported by the CUDA kernel: N must be a "
                "positive multiple of 8");
  check_tensor(op, "w_scale", w_scale, device, {at::kFloat}, {N});
  QENGINE_CHECK(op, out_dtype == at::kBFloat16 || out_dtype == at::kHalf, "out_dtype must be torch.bfloat16 or "
                "torch.float16 for the CUDA kernel, got ", out_dtype);
  if (bias.has_value()) check_tensor(op, "bias", *bias, device, {at::kBFloat16, at::kHalf, at::kFloat}, {N});
  QENGINE_CHECK(op, lowrank_act.has_value() == lora_up.has_value(), "lowrank_act and lora_up must be given together");
  if (lowrank_act.has_value()) {
    check_tensor(op, "lowrank_act", *lowrank_act, device, {at::kFloat}, {M, -1});
    check_tensor(op, "lora_up", *lora_up, device, {at::kBFloat16, at::kHalf, at::kFloat}, {N, lowrank_act->size(1)});
  }
  QENGINE_CHECK(op, M <= INT32_MAX && N <= INT32_MAX, "M and N must fit in int32, got M=", M, " N=", N);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"a", &a}, {"w", &w}})
    QENGINE_CHECK(op, reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0, name,
                  " must start at a 16-byte aligned address (a view at an offset is not supported)");

  W8A8TileConfig cfg;
  if (forced != nullptr) {
    cfg = *forced;
    QENGINE_CHECK(op, tile_config_compiled(cfg, g.in_type), "tile config ", tile_config_name(cfg),
                  " is not compiled into this build (archs: ", compiled_archs_str(), ")");
    const int need = tile_config_is_sm90(cfg) ? 90 : (g.in_type == QuantType::kFP8E4M3 ? 89 : 80);
    QENGINE_CHECK(op, has_code_for(device, need), "tile config ", tile_config_name(cfg), " cannot run on ",
                  device_arch_str(device));
  } else {
    cfg = dispatch_config(g, device, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K));
  }
  const int64_t rank = lowrank_act.has_value() ? lowrank_act->size(1) : 0;
  // The low-rank branch is fused into the epilogue of the sm90 configs (ranks that are multiples
  // of 8); where the heuristic picked the mma.sync kernel for a tiny INT8 problem on sm90, the
  // 64x64 wgmma config (which has the fused variant) takes it instead.
  if (rank > 0 && rank % 8 == 0 && forced == nullptr && !tile_config_has_lowrank(cfg, g.in_type) &&
      sm90_path(g, device) &&
      tile_config_has_lowrank(W8A8TileConfig::kSm90_64x64x128_Pingpong_C1x4, g.in_type))
    cfg = W8A8TileConfig::kSm90_64x64x128_Pingpong_C1x4;
  const bool fused_lowrank = rank > 0 && rank % 8 == 0 && tile_config_has_lowrank(cfg, g.in_type);

  c10::cuda::CUDAGuard guard(device);
  auto out = at::empty({M, N}, a.options().dtype(out_dtype));
  if (M == 0) return out;
  at::Tensor bias_t;
  if (bias.has_value()) bias_t = bias->scalar_type() == out_dtype ? *bias : bias->to(out_dtype);

  W8A8GemmParams p{};
  p.a = a.data_ptr();
  p.lda = K;
  p.a_scale = a_scale.data_ptr<float>();
  p.w = w.data_ptr();
  p.ldw = K;
  p.w_scale = w_scale.data_ptr<float>();
  p.bias = bias_t.defined() ? bias_t.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.ldo = N;
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.in_type = g.in_type;
  p.out_type = float_type(op, "out_dtype", out_dtype);
  p.sm_count = device_arch(device).sm_count;
  if (forced_schedule != nullptr) {
    p.raster = forced_schedule[0];
    p.swizzle = forced_schedule[1];
  } else {
    choose_schedule(p.M, p.N, p.K, cfg, g.in_type, &p.raster, &p.swizzle);
  }
  at::Tensor act_t, up_t;
  if (fused_lowrank) {
    // The epilogue's MMA reads lora_up as bf16 (an fp16/fp32 lora_up is rounded once per call),
    // both operands with 16-byte aligned rows.
    act_t = reinterpret_cast<uintptr_t>(lowrank_act->data_ptr()) % 16 ? lowrank_act->clone() : *lowrank_act;
    up_t = lora_up->scalar_type() == at::kBFloat16 ? *lora_up : lora_up->to(at::kBFloat16);
    if (reinterpret_cast<uintptr_t>(up_t.data_ptr()) % 16) up_t = up_t.clone();
    p.lowrank_act = act_t.data_ptr<float>();
    p.lora_up = up_t.data_ptr();
    p.rank = static_cast<int>(rank);
  }
  at::Tensor workspace;
  p.workspace_bytes = w8a8_gemm_workspace_bytes(p, cfg);
  if (p.workspace_bytes > 0) {
    workspace = at::empty({static_cast<int64_t>(p.workspace_bytes)}, a.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }
  const cudaError_t err = w8a8_gemm(p, cfg, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel ", tile_config_name(cfg),
                                     fused_lowrank ? " (low-rank epilogue)" : "", " failed for M=", M, " N=", N, " K=", K,
                                     " rank=", rank, ": ", cudaGetErrorString(err)));

  // Unfused fallback (mma.sync configs, ranks not a multiple of 8): the low-rank product is added
  // after the GEMM in fp32 and rounded again (one more rounding than the fused epilogue).
  if (rank > 0 && !fused_lowrank) out.add_(at::mm(*lowrank_act, lora_up->to(at::kFloat).t()));
  return out;
}

at::Tensor w8a8_int8_gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
                          const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lowrank_act,
                          const std::optional<at::Tensor>& lora_up, at::ScalarType out_dtype) {
  return run_gemm(gemm_args(QuantType::kInt8), a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype, nullptr);
}

at::Tensor w8a8_fp8_gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
                         const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lowrank_act,
                         const std::optional<at::Tensor>& lora_up, at::ScalarType out_dtype) {
  return run_gemm(gemm_args(QuantType::kFP8E4M3), a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype, nullptr);
}

W8A8TileConfig config_from_name(const std::string& name) {
  for (int i = 0; i < static_cast<int>(W8A8TileConfig::kCount); ++i) {
    auto c = static_cast<W8A8TileConfig>(i);
    if (name == tile_config_name(c)) return c;
  }
  TORCH_CHECK_VALUE(false, cat("qengine: unknown W8A8 tile config '", name, "'"));
}

QuantType quant_type_from_dtype(at::ScalarType t) {
  TORCH_CHECK_VALUE(t == at::kChar || t == at::kFloat8_e4m3fn, cat("qengine: expected int8 or float8_e4m3fn, got ", t));
  return t == at::kChar ? QuantType::kInt8 : QuantType::kFP8E4M3;
}

at::ScalarType out_dtype_from_name(const std::string& s) {
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  TORCH_CHECK_VALUE(false, cat("qengine: out_dtype must be 'bfloat16' or 'float16', got '", s, "'"));
}

}  // namespace

void register_gemm_debug(pybind11::module_& m) {
  m.def(
      "w8a8_gemm_with_config",
      [](const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
         const std::optional<at::Tensor>& bias, const std::string& out_dtype, const std::string& config,
         const std::optional<at::Tensor>& lowrank_act, const std::optional<at::Tensor>& lora_up,
         const std::optional<std::string>& raster, std::optional<int> swizzle) {
        const W8A8TileConfig cfg = config_from_name(config);
        int schedule[2] = {0, 1};
        const bool forced_schedule = raster.has_value() || swizzle.has_value();
        if (forced_schedule) {
          const std::string r = raster.value_or("auto");
          TORCH_CHECK_VALUE(r == "auto" || r == "m" || r == "n", cat("qengine: raster must be 'auto', 'm' or 'n', got '", r, "'"));
          schedule[0] = r == "m" ? 1 : r == "n" ? 2 : 0;
          schedule[1] = swizzle.value_or(1);
          TORCH_CHECK_VALUE(schedule[1] == 1 || schedule[1] == 2 || schedule[1] == 4 || schedule[1] == 8,
                            cat("qengine: swizzle must be 1, 2, 4 or 8, got ", schedule[1]));
        }
        return run_gemm(gemm_args(quant_type_from_dtype(a.scalar_type())), a, a_scale, w, w_scale, bias, lowrank_act,
                        lora_up, out_dtype_from_name(out_dtype), &cfg, forced_schedule ? schedule : nullptr);
      },
      "w8a8 GEMM (a int8|fp8) with a forced tile config; out_dtype 'bfloat16'|'float16'; optionally a forced "
      "persistent tile order (sm90 configs): raster 'auto'|'m'|'n', swizzle 1|2|4|8. Debug/test entry point.",
      pybind11::arg("a"), pybind11::arg("a_scale"), pybind11::arg("w"), pybind11::arg("w_scale"), pybind11::arg("bias"),
      pybind11::arg("out_dtype"), pybind11::arg("config"), pybind11::arg("lowrank_act") = std::nullopt,
      pybind11::arg("lora_up") = std::nullopt, pybind11::arg("raster") = std::nullopt,
      pybind11::arg("swizzle") = std::nullopt);
  m.def(
      "gemm_config_fuses_lowrank",
      [](const std::string& config, const std::string& in_dtype) {
        TORCH_CHECK_VALUE(in_dtype == "int8" || in_dtype == "float8_e4m3fn", "in_dtype must be 'int8' or 'float8_e4m3fn'");
        return tile_config_has_lowrank(config_from_name(config),
                                       in_dtype == "int8" ? QuantType::kInt8 : QuantType::kFP8E4M3);
      },
      "Whether the config adds lowrank_act @ lora_up^T in its epilogue (else a separate matmul follows).",
      pybind11::arg("config"), pybind11::arg("in_dtype"));
  m.def(
      "gemm_configs",
      []() {
        std::vector<std::string> names;
        for (int i = 0; i < static_cast<int>(W8A8TileConfig::kCount); ++i)
          names.emplace_back(tile_config_name(static_cast<W8A8TileConfig>(i)));
        return names;
      },
      "Names of every W8A8 tile config (compiled or not).");
  m.def(
      "gemm_config_available",
      [](const std::string& config, const std::string& in_dtype, int64_t device_index) {
        const W8A8TileConfig c = config_from_name(config);
        TORCH_CHECK_VALUE(in_dtype == "int8" || in_dtype == "float8_e4m3fn", "in_dtype must be 'int8' or 'float8_e4m3fn'");
        const QuantType t = in_dtype == "int8" ? QuantType::kInt8 : QuantType::kFP8E4M3;
        const int need = tile_config_is_sm90(c) ? 90 : (t == QuantType::kFP8E4M3 ? 89 : 80);
        return tile_config_compiled(c, t) && has_code_for(at::Device(at::kCUDA, device_index), need);
      },
      "Whether the config is compiled for in_dtype ('int8'|'float8_e4m3fn') and runs on the CUDA device.",
      pybind11::arg("config"), pybind11::arg("in_dtype"), pybind11::arg("device_index") = 0);
  m.def(
      "gemm_heuristic",
      [](int64_t M, int64_t N, int64_t K, const std::string& in_dtype, int64_t device_index) {
        TORCH_CHECK_VALUE(in_dtype == "int8" || in_dtype == "float8_e4m3fn", "in_dtype must be 'int8' or 'float8_e4m3fn'");
        const auto g = gemm_args(in_dtype == "int8" ? QuantType::kInt8 : QuantType::kFP8E4M3);
        return std::string(tile_config_name(dispatch_config(g, at::Device(at::kCUDA, device_index), static_cast<int>(M),
                                                            static_cast<int>(N), static_cast<int>(K))));
      },
      "The tile config the op would pick for (M, N, K) on the device.", pybind11::arg("M"), pybind11::arg("N"),
      pybind11::arg("K"), pybind11::arg("in_dtype"), pybind11::arg("device_index") = 0);
}

}  // namespace qengine::bindings

TORCH_LIBRARY_IMPL(qengine, CUDA, m) {
  m.impl("w8a8_int8_gemm", &qengine::bindings::w8a8_int8_gemm);
  m.impl("w8a8_fp8_gemm", &qengine::bindings::w8a8_fp8_gemm);
}
