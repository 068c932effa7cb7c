// torch binding of quantize_act_{int8,fp8}: checks, arch dispatch, launcher call.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "common.h"
#include "qengine/quantize_act.h"

namespace qengine::bindings {
namespace {

// The one arch-dispatch point of this family: the kernel is plain CUDA (no arch-specific
// instructions), built for every compiled arch; it needs sm_80+ only for bf16 loads.
void check_arch(const char* op, const at::Device& device) {
  QENGINE_CHECK(op, has_code_for(device, 80), "no kernel for ", device_arch_str(device),
                " in this build (compiled archs: ", compiled_archs_str(), "); rebuild with QENGINE_CUDA_ARCHS "
                "including this GPU, or use backend='reference'");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act(const char* op, QuantType qt, const at::Tensor& x,
                                                            const std::optional<at::Tensor>& smooth,
                                                            const std::optional<at::Tensor>& lora_down) {
  const auto device = x.device();
  check_tensor(op, "x", x, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, -1});
  const int64_t M = x.size(0), K = x.size(1);
  QENGINE_CHECK(op, K > 0 && K % 16 == 0, "K=", K, " is not supported: K must be a positive multiple of 16");
  at::Tensor smooth_t;
  if (smooth.has_value()) {
    check_tensor(op, "smooth", *smooth, device, {at::kBFloat16, at::kHalf, at::kFloat}, {K});
    // The kernel reads smooth as x's dtype or fp32; an fp32 copy of another 16-bit type is exact.
    smooth_t = (smooth->scalar_type() == x.scalar_type() || smooth->scalar_type() == at::kFloat)
                   ? *smooth
                   : smooth->to(at::kFloat);
  }
  if (lora_down.has_value()) check_tensor(op, "lora_down", *lora_down, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, K});
  check_arch(op, device);

  c10::cuda::CUDAGuard guard(device);
  // Vector loads need 16-byte aligned rows; a view at an odd offset gets an aligned copy.
  at::Tensor xa = reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 ? x.clone() : x;
  auto q = at::empty({M, K}, x.options().dtype(qt == QuantType::kInt8 ? at::kChar : at::kFloat8_e4m3fn));
  auto scale = at::empty({M}, x.options().dtype(at::kFloat));

  QuantizeActParams p{};
  p.x = xa.data_ptr();
  p.ldx = K;
  p.x_type = float_type(op, "x", x.scalar_type());
  p.smooth = smooth_t.defined() ? smooth_t.data_ptr() : nullptr;
  p.smooth_type = smooth_t.defined() ? float_type(op, "smooth", smooth_t.scalar_type()) : p.x_type;
  p.q = q.data_ptr();
  p.scale = scale.data_ptr<float>();
  p.M = M;
  p.K = K;
  p.q_type = qt;
  p.sm_count = device_arch(device).sm_count;
  const cudaError_t err = qengine::quantize_act(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed: ", cudaGetErrorString(err)));

  // Not fused yet: the low-rank down-projection runs as an fp32 matmul on the smoothed input.
  at::Tensor lowrank;
  if (lora_down.has_value()) {
    at::Tensor xs = x.to(at::kFloat);
    if (smooth.has_value()) xs = xs / smooth->to(at::kFloat);
    lowrank = at::matmul(xs, lora_down->to(at::kFloat).t());
  } else {
    lowrank = at::empty({M, 0}, x.options().dtype(at::kFloat));
  }
  return {q, scale, lowrank};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act_int8(const at::Tensor& x, const std::optional<at::Tensor>& smooth,
                                                                 const std::optional<at::Tensor>& lora_down) {
  return quantize_act("quantize_act_int8", QuantType::kInt8, x, smooth, lora_down);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act_fp8(const at::Tensor& x, const std::optional<at::Tensor>& smooth,
                                                                const std::optional<at::Tensor>& lora_down) {
  return quantize_act("quantize_act_fp8", QuantType::kFP8E4M3, x, smooth, lora_down);
}

}  // namespace
}  // namespace qengine::bindings

TORCH_LIBRARY_IMPL(qengine, CUDA, m) {
  m.impl("quantize_act_int8", &qengine::bindings::quantize_act_int8);
  m.impl("quantize_act_fp8", &qengine::bindings::quantize_act_fp8);
}
