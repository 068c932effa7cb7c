// torch binding of w4a8_gemm (INT4 per-channel weights, prepacked; INT8 per-token
// activations; sm_90a), plus debug entry points (qengine._C.w4a8_gemm_with_config & co) that
// force a tile config for the tests and benchmarks.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "common.h"
#include "qengine/w4a8_gemm.h"

namespace qengine::bindings {
namespace {

constexpr const char* kOp = "w4a8_gemm";

// The one arch-dispatch point of W4A8: the sm_90a kernels (mixed-input wgmma; mma.sync split-K
// for few tokens, which uses clusters and DSMEM), else an error naming the arch (W4A4 covers
// sm_80/86/89).
W4A8TileConfig dispatch_config(const at::Device& device, int M, int N, int K) {
  const DeviceArch arch = device_arch(device);
  const bool sm90 = arch.major == 9 && arch.minor == 0 && has_code_for(device, 90) && w4a8_kernels_compiled();
  QENGINE_CHECK(kOp, sm90, "no kernel for ", device_arch_str(device), " in this build (compiled archs: ",
                compiled_archs_str(), "; the W4A8 kernel needs sm_90a: Hopper, built with 90a in QENGINE_CUDA_ARCHS); "
                "use backend='reference' explicitly to run the float32 reference on this GPU");
  return w4a8_choose_tile_config(M, N, K, arch.sm_count);
}

at::Tensor run_gemm(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lowrank_act,
                    const std::optional<at::Tensor>& lora_up, at::ScalarType out_dtype, const W4A8TileConfig* forced) {
  const auto device = a.device();
  check_tensor(kOp, "a", a, device, {at::kChar}, {-1, -1});
  const int64_t M = a.size(0), K = a.size(1);
  QENGINE_CHECK(kOp, K > 0 && K % 32 == 0, "K=", K, " is not supported by the CUDA kernel: K must be a positive "
                "multiple of 32 (the prepacked weight's 16x32 blocks)");
  QENGINE_CHECK(kOp, K <= kW4A8MaxK, "K=", K, " is not supported by the CUDA kernel: K must be at most ", kW4A8MaxK,
                " (its int32 accumulator holds 16x the dot product: K x 128 x 128 < 2^31)");
  check_tensor(kOp, "a_scale", a_scale, device, {at::kFloat}, {M});
  check_tensor(kOp, "w", w, device, {at::kByte}, {-1, K / 2});
  const int64_t N = w.size(0);
  QENGINE_CHECK(kOp, N > 0 && N % 16 == 0, "N=", N, " (rows of w) is not supported: N must be a positive multiple "
                "of 16 (the prepacked weight's 16x32 blocks)");
  check_tensor(kOp, "w_scale", w_scale, device, {at::kFloat}, {N, -1});
  QENGINE_CHECK(kOp, w_scale.size(1) == 1, "the CUDA kernel takes per-output-channel INT4 weights (w_scale [N, 1]), "
                "got w_scale of shape ", w_scale.sizes(), " (group size ", K / std::max<int64_t>(w_scale.size(1), 1),
                "); group-wise W4A8 runs only with backend='reference' (notes/w4a8.md says why)");
  QENGINE_CHECK(kOp, out_dtype == at::kBFloat16 || out_dtype == at::kHalf, "out_dtype must be torch.bfloat16 or "
                "torch.float16 for the CUDA kernel, got ", out_dtype);
  if (bias.has_value()) check_tensor(kOp, "bias", *bias, device, {at::kBFloat16, at::kHalf, at::kFloat}, {N});
  QENGINE_CHECK(kOp, lowrank_act.has_value() == lora_up.has_value(), "lowrank_act and lora_up must be given together");
  if (lowrank_act.has_value()) {
    check_tensor(kOp, "lowrank_act", *lowrank_act, device, {at::kFloat, at::kBFloat16, at::kHalf}, {M, -1});
    check_tensor(kOp, "lora_up", *lora_up, device, {at::kBFloat16, at::kHalf, at::kFloat}, {N, lowrank_act->size(1)});
  }
  QENGINE_CHECK(kOp, M <= INT32_MAX && N <= INT32_MAX, "M and N must fit in int32, got M=", M, " N=", N);
  for (auto [name, t] : {std::pair<const char*, const at::Tensor*>{"a", &a}, {"w", &w}})
    QENGINE_CHECK(kOp, reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 == 0, name,
                  " must start at a 16-byte aligned address (a view at an offset is not supported)");

  W4A8TileConfig cfg;
  if (forced != nullptr) {
    cfg = *forced;
    QENGINE_CHECK(kOp, w4a8_kernels_compiled() && has_code_for(device, 90), "tile config ", w4a8_tile_config_name(cfg),
                  " cannot run on ", device_arch_str(device), " with this build (archs: ", compiled_archs_str(), ")");
  } else {
    cfg = dispatch_config(device, static_cast<int>(M), static_cast<int>(N), static_cast<int>(K));
  }

  c10::cuda::CUDAGuard guard(device);
  auto out = at::empty({M, N}, a.options().dtype(out_dtype));
  if (M == 0) return out;
  at::Tensor bias_t;
  if (bias.has_value()) bias_t = bias->scalar_type() == out_dtype ? *bias : bias->to(out_dtype);
  // The low-rank branch. The split-K configs (any rank % 16 == 0) and the cooperative wgmma
  // configs (rank % 16 == 0, <= kW4A8StagedMaxRank) multiply it in their epilogue (lora_up in
  // out_dtype; the cooperative ones take lowrank_act rounded to out_dtype, since their epilogue
  // copies it to shared memory as it is: QLinear has the quantize kernel write it so, any other
  // dtype is rounded here; split-K reads fp32). For the others its [M, N] product comes from
  // one cuBLAS GEMM in out_dtype (fp32 accumulation; lowrank_act rounded to out_dtype first) and
  // is read once by the W4A8 epilogue as its C operand, so the output is written once.
  const int64_t rank = lowrank_act.has_value() ? lowrank_act->size(1) : 0;
  // Pointer alignment the fused epilogues load with: split-K reads lowrank_act in 8-byte and
  // lora_up in 4-byte pieces; the cooperative (staged) epilogue both in 16-byte pieces.
  const bool splitk = cfg == W4A8TileConfig::kSm90_Mma_128x64x128_SplitK || cfg == W4A8TileConfig::kSm90_Mma_128x64x256_SplitK;
  const uintptr_t act_align = splitk ? 8 : 16, up_align = splitk ? 4 : 16;
  at::Tensor lowrank_t, lora_up_t, act_t;  // act_t: lowrank_act in the dtype the fused epilogue reads
  bool fused_lowrank = rank > 0 && rank <= INT32_MAX && w4a8_config_fuses_lowrank(cfg, static_cast<int>(rank));
  if (fused_lowrank) {
    // Split-K reads fp32, the cooperative configs out_dtype (.to() returns the tensor itself when
    // its dtype matches already).
    act_t = lowrank_act->to(splitk ? at::kFloat : out_dtype);
    lora_up_t = lora_up->to(out_dtype);
    fused_lowrank = reinterpret_cast<uintptr_t>(act_t.data_ptr()) % act_align == 0 &&
                    reinterpret_cast<uintptr_t>(lora_up_t.data_ptr()) % up_align == 0;
  }
  if (!fused_lowrank && rank > 0)  // reuses the rounded copies made above when misalignment led here
    lowrank_t = at::mm(act_t.defined() && !splitk ? act_t : lowrank_act->to(out_dtype),
                       (lora_up_t.defined() ? lora_up_t : lora_up->to(out_dtype)).t());

  W4A8GemmParams p{};
  p.a = a.data_ptr<int8_t>();
  p.lda = K;
  p.a_scale = a_scale.data_ptr<float>();
  p.w = w.data_ptr<uint8_t>();
  p.w_scale = w_scale.data_ptr<float>();
  p.bias = bias_t.defined() ? bias_t.data_ptr() : nullptr;
  p.lowrank = lowrank_t.defined() ? lowrank_t.data_ptr() : nullptr;
  p.lowrank_act = fused_lowrank && splitk ? act_t.data_ptr<float>() : nullptr;
  p.lowrank_act_out = fused_lowrank && !splitk ? act_t.data_ptr() : nullptr;
  p.lora_up = fused_lowrank ? lora_up_t.data_ptr() : nullptr;
  p.rank = fused_lowrank ? static_cast<int>(rank) : 0;
  p.out = out.data_ptr();
  p.ldo = N;
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(N);
  p.K = static_cast<int>(K);
  p.out_type = float_type(kOp, "out_dtype", out_dtype);
  p.sm_count = device_arch(device).sm_count;
  at::Tensor workspace;
  p.workspace_bytes = w4a8_gemm_workspace_bytes(p, cfg);
  if (p.workspace_bytes > 0) {
    workspace = at::empty({static_cast<int64_t>(p.workspace_bytes)}, a.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }
  const cudaError_t err = w4a8_gemm(p, cfg, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", kOp, ": kernel ", w4a8_tile_config_name(cfg), " failed for M=", M,
                                     " N=", N, " K=", K, ": ", cudaGetErrorString(err)));
  return out;
}

at::Tensor w4a8_gemm_op(const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
                        const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lowrank_act,
                        const std::optional<at::Tensor>& lora_up, at::ScalarType out_dtype) {
  return run_gemm(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype, nullptr);
}

W4A8TileConfig w4a8_config_from_name(const std::string& name) {
  for (int i = 0; i < static_cast<int>(W4A8TileConfig::kCount); ++i) {
    auto c = static_cast<W4A8TileConfig>(i);
    if (name == w4a8_tile_config_name(c)) return c;
  }
  TORCH_CHECK_VALUE(false, cat("qengine: unknown W4A8 tile config '", name, "'"));
}

}  // namespace

void register_w4a8_debug(pybind11::module_& m) {
  m.def(
      "w4a8_gemm_with_config",
      [](const at::Tensor& a, const at::Tensor& a_scale, const at::Tensor& w, const at::Tensor& w_scale,
         const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& lowrank_act,
         const std::optional<at::Tensor>& lora_up, const std::string& out_dtype, const std::string& config) {
        const W4A8TileConfig cfg = w4a8_config_from_name(config);
        TORCH_CHECK_VALUE(out_dtype == "bfloat16" || out_dtype == "float16",
                          cat("qengine: out_dtype must be 'bfloat16' or 'float16', got '", out_dtype, "'"));
        return run_gemm(a, a_scale, w, w_scale, bias, lowrank_act, lora_up,
                        out_dtype == "bfloat16" ? at::kBFloat16 : at::kHalf, &cfg);
      },
      "w4a8_gemm with a forced tile config; out_dtype 'bfloat16'|'float16'. Debug/test entry point.", pybind11::arg("a"), pybind11::arg("a_scale"),
      pybind11::arg("w"), pybind11::arg("w_scale"), pybind11::arg("bias"), pybind11::arg("lowrank_act"),
      pybind11::arg("lora_up"), pybind11::arg("out_dtype"), pybind11::arg("config"));
  m.def(
      "w4a8_gemm_configs",
      []() {
        std::vector<std::string> names;
        for (int i = 0; i < static_cast<int>(W4A8TileConfig::kCount); ++i)
          names.emplace_back(w4a8_tile_config_name(static_cast<W4A8TileConfig>(i)));
        return names;
      },
      "Names of every W4A8 tile config.");
  m.def(
      "w4a8_config_fuses_lowrank",
      [](const std::string& config, int64_t rank) {
        return rank > 0 && rank <= INT32_MAX && w4a8_config_fuses_lowrank(w4a8_config_from_name(config), static_cast<int>(rank));
      },
      "Whether the config multiplies a low-rank branch of this rank in its epilogue (given aligned operands) "
      "instead of reading its [M, N] product.", pybind11::arg("config"), pybind11::arg("rank"));
  m.def(
      "w4a8_gemm_heuristic",
      [](int64_t M, int64_t N, int64_t K, int64_t device_index) {
        return std::string(w4a8_tile_config_name(dispatch_config(at::Device(at::kCUDA, device_index),
                                                                 static_cast<int>(M), static_cast<int>(N),
                                                                 static_cast<int>(K))));
      },
      "The W4A8 tile config the op would pick for (M, N, K) on the device.", pybind11::arg("M"), pybind11::arg("N"),
      pybind11::arg("K"), pybind11::arg("device_index") = 0);
}

}  // namespace qengine::bindings

TORCH_LIBRARY_IMPL(qengine, CUDA, m) {
  m.impl("w4a8_gemm", &qengine::bindings::w4a8_gemm_op);
}
