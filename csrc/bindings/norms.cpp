// torch binding of the fused normalization ops: rmsnorm_rope (attention q/k), group_norm_nhwc and
// group_norm_quant_{int8,fp8} (GroupNorm writing a quantized conv's 8-bit input).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>

#include "common.h"
#include "qengine/norms.h"

namespace qengine::bindings {
namespace {

void check_arch(const char* op, const at::Device& device) {
  QENGINE_CHECK(op, has_code_for(device, 80), "no kernel for ", device_arch_str(device),
                " in this build (compiled archs: ", compiled_archs_str(), ")");
}

// [B, S, H, D] with the head and feature dims packed (a contiguous tensor, or a token-strided
// view such as one third of a fused qkv projection's output).
void check_heads(const char* op, const char* name, const at::Tensor& t, const at::Device& device) {
  QENGINE_CHECK(op, t.is_cuda() && t.device() == device, name, " must be a CUDA tensor on ", device, ", got one on ",
                t.device());
  QENGINE_CHECK(op, t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf, name,
                " must have dtype BFloat16 or Half, got ", t.scalar_type());
  QENGINE_CHECK(op, t.dim() == 4, name, " must have shape [batch, tokens, heads, head_dim], got ", shape_str(t));
  const int64_t D = t.size(3);
  QENGINE_CHECK(op, D == 64 || D == 128 || D == 256, name, ": head_dim=", D, " is not supported (64, 128 or 256)");
  QENGINE_CHECK(op, t.stride(3) == 1 && (t.size(2) == 1 || t.stride(2) == D), name,
                " must have packed heads (strides [*, *, ", D, ", 1]), got strides ", t.strides());
  QENGINE_CHECK(op, reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 && t.stride(1) % 8 == 0 &&
                        (t.size(0) == 1 || t.stride(0) % 8 == 0),
                name, " rows must be 16-byte aligned (strides ", t.strides(), ")");
}

at::Tensor rmsnorm_rope(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& cos,
                        const std::optional<at::Tensor>& sin, double eps, const std::optional<at::Tensor>& prefix,
                        const std::optional<at::Tensor>& prefix_weight) {
  const char* op = "rmsnorm_rope";
  const auto device = x.device();
  check_heads(op, "x", x, device);
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3);
  check_tensor(op, "weight", weight, device, {x.scalar_type()}, {D});
  QENGINE_CHECK(op, prefix.has_value() == prefix_weight.has_value(),
                "prefix and prefix_weight must be given together");
  int64_t S_prefix = 0;
  if (prefix.has_value()) {
    check_heads(op, "prefix", *prefix, device);
    QENGINE_CHECK(op, prefix->scalar_type() == x.scalar_type(), "prefix dtype ", prefix->scalar_type(),
                  " differs from x dtype ", x.scalar_type());
    QENGINE_CHECK(op, prefix->size(0) == B && prefix->size(2) == H && prefix->size(3) == D, "prefix shape ",
                  shape_str(*prefix), " does not match x shape ", shape_str(x), " outside the token dim");
    check_tensor(op, "prefix_weight", *prefix_weight, device, {x.scalar_type()}, {D});
    S_prefix = prefix->size(1);
  }
  QENGINE_CHECK(op, cos.has_value() == sin.has_value(), "cos and sin must be given together");
  if (cos.has_value()) {
    check_tensor(op, "cos", *cos, device, {at::kFloat}, {S_prefix + S, D});
    check_tensor(op, "sin", *sin, device, {at::kFloat}, {S_prefix + S, D});
  }
  QENGINE_CHECK(op, reinterpret_cast<uintptr_t>(weight.data_ptr()) % 16 == 0 &&
                        (!prefix_weight.has_value() || reinterpret_cast<uintptr_t>(prefix_weight->data_ptr()) % 16 == 0),
                "weights must be 16-byte aligned");
  check_arch(op, device);
  c10::cuda::CUDAGuard guard(device);
  auto out = at::empty({B, S_prefix + S, H, D}, x.options().memory_format(at::MemoryFormat::Contiguous));
  RmsNormRopeParams p{};
  p.x = x.data_ptr();
  p.x_sb = x.stride(0);
  p.x_ss = x.stride(1);
  p.w = weight.data_ptr();
  if (prefix.has_value()) {
    p.prefix = prefix->data_ptr();
    p.p_sb = prefix->stride(0);
    p.p_ss = prefix->stride(1);
    p.prefix_w = prefix_weight->data_ptr();
  }
  p.cos = cos.has_value() ? cos->data_ptr<float>() : nullptr;
  p.sin = sin.has_value() ? sin->data_ptr<float>() : nullptr;
  p.out = out.data_ptr();
  p.x_type = float_type(op, "x", x.scalar_type());
  p.B = B;
  p.S = S;
  p.S_prefix = S_prefix;
  p.H = static_cast<int>(H);
  p.D = static_cast<int>(D);
  p.eps = static_cast<float>(eps);
  const cudaError_t err = qengine::rmsnorm_rope(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed for x ", shape_str(x), ": ",
                                     cudaGetErrorString(err)));
  return out;
}

// group_norm_nhwc and group_norm_quant_{int8,fp8}: q_type/q_scale set = the 8-bit output.
at::Tensor run_group_norm(const char* op, const at::Tensor& x, int64_t groups, const std::optional<at::Tensor>& weight,
                          const std::optional<at::Tensor>& bias, double eps, bool silu,
                          const std::optional<at::Tensor>& add, const std::optional<QuantType> q_type,
                          const at::Tensor* q_scale) {
  const auto device = x.device();
  QENGINE_CHECK(op, x.is_cuda(), "x must be a CUDA tensor, got one on ", x.device());
  QENGINE_CHECK(op, x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf,
                "x must have dtype BFloat16 or Half, got ", x.scalar_type());
  QENGINE_CHECK(op, x.dim() == 4, "x must have shape [N, C, H, W], got ", shape_str(x));
  QENGINE_CHECK(op, x.is_contiguous(at::MemoryFormat::ChannelsLast),
                "x must be channels_last (x.contiguous(memory_format=torch.channels_last)); strides ", x.strides(),
                " for shape ", shape_str(x));
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  QENGINE_CHECK(op, groups > 0 && groups <= 128 && C % groups == 0 && (C / groups) % 2 == 0,
                "groups=", groups, " with C=", C, " is not supported: need C % groups == 0, an even C / groups "
                "and groups <= 128");
  QENGINE_CHECK(op, C <= 4096 && N <= 65535, "C=", C, " N=", N, " is not supported (C <= 4096, N <= 65535)");
  if (weight.has_value()) check_tensor(op, "weight", *weight, device, {x.scalar_type()}, {C});
  if (bias.has_value()) check_tensor(op, "bias", *bias, device, {x.scalar_type()}, {C});
  if (add.has_value()) check_tensor(op, "add", *add, device, {x.scalar_type()}, {N, C});
  if (q_scale != nullptr) check_tensor(op, "scale", *q_scale, device, {at::kFloat}, {1});
  QENGINE_CHECK(op, reinterpret_cast<uintptr_t>(x.data_ptr()) % 4 == 0 &&
                        (!add.has_value() || reinterpret_cast<uintptr_t>(add->data_ptr()) % 4 == 0),
                "x and add must be 4-byte aligned");
  check_arch(op, device);
  c10::cuda::CUDAGuard guard(device);
  const at::ScalarType y_dtype = !q_type.has_value() ? x.scalar_type()
                                 : *q_type == QuantType::kInt8 ? at::kChar : at::kFloat8_e4m3fn;
  auto y = at::empty(x.sizes(), x.options().dtype(y_dtype).memory_format(at::MemoryFormat::ChannelsLast));
  if (x.numel() == 0) return y;
  const int sm_count = device_arch(device).sm_count;
  auto ws = at::empty({group_norm_nhwc_workspace_floats(N, HW, static_cast<int>(C), static_cast<int>(groups), sm_count)},
                      x.options().dtype(at::kFloat));
  GroupNormNhwcParams p{};
  p.x = x.data_ptr();
  p.gamma = weight.has_value() ? weight->data_ptr() : nullptr;
  p.beta = bias.has_value() ? bias->data_ptr() : nullptr;
  p.add = add.has_value() ? add->data_ptr() : nullptr;
  p.y = y.data_ptr();
  p.workspace = ws.data_ptr<float>();
  p.x_type = float_type(op, "x", x.scalar_type());
  p.N = N;
  p.HW = HW;
  p.C = static_cast<int>(C);
  p.G = static_cast<int>(groups);
  p.eps = static_cast<float>(eps);
  p.silu = silu;
  p.quantize = q_type.has_value();
  if (q_type.has_value()) {
    p.q_type = *q_type;
    p.q_scale = q_scale->data_ptr<float>();
  }
  p.sm_count = sm_count;
  const cudaError_t err = qengine::group_norm_nhwc(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed for x ", shape_str(x), ": ",
                                     cudaGetErrorString(err)));
  return y;
}

at::Tensor group_norm_nhwc(const at::Tensor& x, int64_t groups, const std::optional<at::Tensor>& weight,
                           const std::optional<at::Tensor>& bias, double eps, bool silu,
                           const std::optional<at::Tensor>& add) {
  return run_group_norm("group_norm_nhwc", x, groups, weight, bias, eps, silu, add, std::nullopt, nullptr);
}

at::Tensor group_norm_quant_int8(const at::Tensor& x, int64_t groups, const std::optional<at::Tensor>& weight,
                                 const std::optional<at::Tensor>& bias, double eps, bool silu,
                                 const std::optional<at::Tensor>& add, const at::Tensor& scale) {
  return run_group_norm("group_norm_quant_int8", x, groups, weight, bias, eps, silu, add, QuantType::kInt8, &scale);
}

at::Tensor group_norm_quant_fp8(const at::Tensor& x, int64_t groups, const std::optional<at::Tensor>& weight,
                                const std::optional<at::Tensor>& bias, double eps, bool silu,
                                const std::optional<at::Tensor>& add, const at::Tensor& scale) {
  return run_group_norm("group_norm_quant_fp8", x, groups, weight, bias, eps, silu, add, QuantType::kFP8E4M3, &scale);
}

}  // namespace
}  // namespace qengine::bindings

TORCH_LIBRARY_IMPL(qengine, CUDA, m) {
  m.impl("rmsnorm_rope", &qengine::bindings::rmsnorm_rope);
  m.impl("group_norm_nhwc", &qengine::bindings::group_norm_nhwc);
  m.impl("group_norm_quant_int8", &qengine::bindings::group_norm_quant_int8);
  m.impl("group_norm_quant_fp8", &qengine::bindings::group_norm_quant_fp8);
}
