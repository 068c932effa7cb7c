// torch binding of quantize_act_int4 and w4a4_gemm: checks with clear errors, the arch dispatch
// of the W4A4 family, launcher calls; plus debug entry points (qengine._C.w4a4_gemm_with_config
// & co) that force a tile config.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "common.h"
#include "qengine/w4a4.h"

namespace qengine::bindings {
namespace {

// The one arch-dispatch point of the W4A4 family: mma.sync s4 exists from sm_80 on (sm_90 runs
// it too, without speed); there is no wgmma INT4 path.
void check_arch(const char* op, const at::Device& device) {
  QENGINE_CHECK(op, has_code_for(device, 80), "no kernel for ", device_arch_str(device), " in this build (compiled archs: ",
                compiled_archs_str(), "; W4A4 needs sm_80 or newer); rebuild with QENGINE_CUDA_ARCHS including this "
                "GPU, or use backend='reference'");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act_int4(const at::Tensor& x, const std::optional<at::Tensor>& smooth,
                                                                 const std::optional<at::Tensor>& lora_down) {
  const char* op = "quantize_act_int4";
  const auto device = x.device();
  check_tensor(op, "x", x, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, -1});
  const int64_t M = x.size(0), K = x.size(1);
  QENGINE_CHECK(op, K > 0 && K % kW4A4GroupSize == 0, "K=", K, " is not supported: K must be a positive multiple of ",
                kW4A4GroupSize, " (the INT4 activation group size)");
  if (smooth.has_value()) check_tensor(op, "smooth", *smooth, device, {at::kBFloat16, at::kHalf, at::kFloat}, {K});
  if (lora_down.has_value()) check_tensor(op, "lora_down", *lora_down, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, K});
  check_arch(op, device);

  c10::cuda::CUDAGuard guard(device);
  const int64_t rank = lora_down.has_value() ? lora_down->size(0) : 0;
  auto q = at::empty({M, K / 2}, x.options().dtype(at::kByte));
  auto scale = at::empty({M, K / kW4A4GroupSize}, x.options().dtype(at::kFloat));
  auto lowrank = at::empty({M, rank}, x.options().dtype(at::kFloat));
  // Ranks above what the kernel keeps in registers: the down-projection runs as an fp32 matmul.
  const bool fused = rank > 0 && rank <= kW4A4MaxFusedRank;

  QuantizeActInt4Params p{};
  p.x = x.data_ptr();
  p.ldx = K;
  p.x_type = float_type(op, "x", x.scalar_type());
  p.smooth = smooth.has_value() ? smooth->data_ptr() : nullptr;
  p.smooth_type = smooth.has_value() ? float_type(op, "smooth", smooth->scalar_type()) : p.x_type;
  p.lora_down = fused ? lora_down->data_ptr() : nullptr;
  p.lora_down_type = fused ? float_type(op, "lora_down", lora_down->scalar_type()) : FloatType::kFP32;
  p.rank = fused ? static_cast<int>(rank) : 0;
  p.q = q.data_ptr<uint8_t>();
  p.scale = scale.data_ptr<float>();
  p.lowrank_act = fused ? lowrank.data_ptr<float>() : nullptr;
  p.M = M;
  p.K = K;
  const cudaError_t err = qengine::quantize_act_int4(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed for M=", M, " K=", K, ": ",
                                      cudaGetErrorString(err)));
  if (rank > kW4A4MaxFusedRank) {
    at::Tensor xs = x.to(at::kFloat);
    if (smooth.has_value()) xs = xs / smooth->to(at::kFloat);
    lowrank = at::matmul(xs, lora_down->to(at::kFloat).t());
  }
  return {q, scale, lowrank};
}

W4A4TileConfig dispatch_config(const at::Device& device, int64_t M, int64_t N, int64_t K) {
  return w4a4_choose_tile_config(static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), device_arch(device).sm_count);
}

at::Tensor run_gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lowrank_act,
                    const std::optional<at::Tensor>& lora_up, at::ScalarType out_dtype, const W4A4TileConfig* forced) {
  const char* op = "w4a4_gemm";
  const auto device = a.device();
  check_tensor(op, "a", a, device, {at::kByte}, {-1, -1});
  const int64_t M = a.size(0), K = a.size(1) * 2;
  QENGINE_CHECK(op, K > 0 && K % kW4A4GroupSize == 0, "K=", K, " (2 x the packed bytes per row of a) is not supported: K "
                "must be a positive multiple of ", kW4A4GroupSize);
  const int64_t G = K / kW4A4GroupSize;
  check_tensor(op, "a_scale", a_scale, device, {at::kFloat}, {M, G});
  check_tensor(op, "w", w, device, {at::kByte}, {-1, K / 2});
  const int64_t N = w.size(0);
  QENGINE_CHECK(op, N > 0, "w must have at least one row (N > 0)");
  check_tensor(op, "w_scale", w_scale, device, {at::kFloat}, {N, G});
  QENGINE_CHECK(op, out_dtype == at::kBFloat16 || out_dtype == at::kHalf || out_dtype == at::kFloat,
                "out_dtype must be torch.bfloat16, torch.float16 or torch.float32, got ", out_dtype);
  if (bias.has_value()) check_tensor(op, "bias", *bias, device, {at::kBFloat16, at::kHalf, at::kFloat}, {N});
  QENGINE_CHECK(op, lowrank_act.has_value() == lora_up.has_value(), "lowrank_act and lora_up must be given together");
  if (lowrank_act.has_value()) {
    check_tensor(op, "lowrank_act", *lowrank_act, device, {at::kFloat}, {M, -1});
    check_tensor(op, "lora_up", *lora_up, device, {at::kBFloat16, at::kHalf, at::kFloat}, {N, lowrank_act->size(1)});
  }
  QENGINE_CHECK(op, M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX, "M, N and K must fit in int32, got M=", M, " N=",
                N, " K=", K);
  check_arch(op, device);
  const W4A4TileConfig cfg = forced != nullptr ? *forced : dispatch_config(device, M, N, K);

  c10::cuda::CUDAGuard guard(device);
  auto out = at::empty({M, N}, a.options().dtype(out_dtype));
  if (M == 0) return out;
  // cp.async reads 16-byte chunks: a view at an odd offset gets an aligned copy.
  const at::Tensor aa = reinterpret_cast<uintptr_t>(a.data_ptr()) % 16 ? a.clone() : a;
  const at::Tensor wa = reinterpret_cast<uintptr_t>(w.data_ptr()) % 16 ? w.clone() : w;
  const int64_t rank = lowrank_act.has_value() ? lowrank_act->size(1) : 0;

  W4A4GemmParams p{};
  p.a = aa.data_ptr<uint8_t>();
  p.a_scale = a_scale.data_ptr<float>();
  p.w = wa.data_ptr<uint8_t>();
  p.w_scale = w_scale.data_ptr<float>();
  p.bias = bias.has_value() ? bias->data_ptr() : nullptr;
  p.bias_type = bias.has_value() ? float_type(op, "bias", bias->scalar_type()) : FloatType::kFP32;
  p.lowrank_act = rank > 0 ? lowrank_act->data_ptr<float>() : nullptr;
  p.lora_up = rank > 0 ? lora_up->data_ptr() : nullptr;
  p.lora_up_type = rank > 0 ? float_type(op, "lora_up", lora_up->scalar_type()) : FloatType::kFP32;
  p.rank = static_cast<int>(rank);
  p.out = out.data_ptr();
  p.out_type = float_type(op, "out_dtype", out_dtype);
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  const cudaError_t err = qengine::w4a4_gemm(p, cfg, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel ", w4a4_tile_config_name(cfg), " failed for M=", M, " N=",
                                      N, " K=", K, ": ", cudaGetErrorString(err)));
  return out;
}

at::Tensor w4a4_gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lowrank_act,
                     const std::optional<at::Tensor>& lora_up, at::ScalarType out_dtype) {
  return run_gemm(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype, nullptr);
}

W4A4TileConfig config_from_name(const std::string& name) {
  for (int i = 0; i < static_cast<int>(W4A4TileConfig::kCount); ++i) {
    auto c = static_cast<W4A4TileConfig>(i);
    if (name == w4a4_tile_config_name(c)) return c;
  }
  TORCH_CHECK_VALUE(false, cat("qengine: unknown W4A4 tile config '", name, "'"));
}

at::ScalarType out_dtype_from_name(const std::string& s) {
  if (s == "bfloat16") return at::kBFloat16;
  if (s == "float16") return at::kHalf;
  if (s == "float32") return at::kFloat;
  TORCH_CHECK_VALUE(false, cat("qengine: out_dtype must be 'bfloat16', 'float16' or 'float32', got '", s, "'"));
}

}  // namespace

void register_w4a4_debug(pybind11::module_& m) {
  m.def(
      "w4a4_gemm_with_config",
      [](const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
         const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lowrank_act,
         const std::optional<at::Tensor>& lora_up, const std::string& out_dtype, const std::string& config) {
        const W4A4TileConfig cfg = config_from_name(config);
        return run_gemm(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype_from_name(out_dtype), &cfg);
      },
      "w4a4_gemm with a forced tile config (a name from w4a4_gemm_configs()); out_dtype 'bfloat16'|'float16'|'float32'. "
      "Debug/test entry point.",
      pybind11::arg("a"), pybind11::arg("a_scale"), pybind11::arg("w"), pybind11::arg("w_scale"), pybind11::arg("bias"),
      pybind11::arg("lowrank_act"), pybind11::arg("lora_up"), pybind11::arg("out_dtype"), pybind11::arg("config"));
  m.def(
      "w4a4_gemm_configs",
      []() {
        std::vector<std::string> names;
        for (int i = 0; i < static_cast<int>(W4A4TileConfig::kCount); ++i)
          names.emplace_back(w4a4_tile_config_name(static_cast<W4A4TileConfig>(i)));
        return names;
      },
      "Names of every W4A4 tile config (all are compiled for every arch of the build).");
  m.def(
      "w4a4_gemm_heuristic",
      [](int64_t M, int64_t N, int64_t K, int64_t device_index) {
        return std::string(w4a4_tile_config_name(dispatch_config(at::Device(at::kCUDA, device_index), M, N, K)));
      },
      "The W4A4 tile config the op would pick for (M, N, K) on the device.", pybind11::arg("M"), pybind11::arg("N"),
      pybind11::arg("K"), pybind11::arg("device_index") = 0);
}

}  // namespace qengine::bindings

TORCH_LIBRARY_IMPL(qengine, CUDA, m) {
  m.impl("quantize_act_int4", &qengine::bindings::quantize_act_int4);
  m.impl("w4a4_gemm", &qengine::bindings::w4a4_gemm);
}
