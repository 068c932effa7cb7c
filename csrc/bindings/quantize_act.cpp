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
  int64_t rank = 0;
  if (lora_down.has_value()) {
    check_tensor(op, "lora_down", *lora_down, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, K});
    rank = lora_down->size(0);
  }
  // Ranks that are multiples of 16 (SVDQuant uses 16..256) run fused in the quantize kernel; any
  // other rank (the op accepts them) gets a separate fp32 matmul on the smoothed input.
  const bool fused_lowrank = rank > 0 && rank % 16 == 0;
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
  // The fused low-rank down-projection reads lora_down as bf16 (the MMA operand type); other
  // dtypes are rounded to bf16 once per call (an fp32 or fp16 lora_down loses mantissa bits).
  at::Tensor down_bf16, lowrank;
  if (fused_lowrank) {
    down_bf16 = lora_down->scalar_type() == at::kBFloat16 ? *lora_down : lora_down->to(at::kBFloat16);
    if (reinterpret_cast<uintptr_t>(down_bf16.data_ptr()) % 16) down_bf16 = down_bf16.clone();  // 16-byte loads
    lowrank = at::empty({M, rank}, x.options().dtype(at::kFloat));
    p.lora_down = down_bf16.data_ptr();
    p.lowrank = lowrank.data_ptr<float>();
    p.rank = static_cast<int>(rank);
  }
  const cudaError_t err = qengine::quantize_act(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed for M=", M, " K=", K, " rank=", rank,
                                     ": ", cudaGetErrorString(err)));
  if (!fused_lowrank) {
    if (rank > 0) {
      at::Tensor xs = x.to(at::kFloat);
      if (smooth.has_value()) xs = xs / smooth->to(at::kFloat);
      lowrank = at::matmul(xs, lora_down->to(at::kFloat).t());
    } else {
      lowrank = at::empty({M, 0}, x.options().dtype(at::kFloat));
    }
  }

  return {q, scale, lowrank};
}

// FP8 with the low-rank branch folded into the GEMM's K (qengine/formats/lowrank_cat.py):
// q [M, K + W] (the x part, then the branch's split columns, W = lowrank_cat_width(r)), scale [M].
std::tuple<at::Tensor, at::Tensor> quantize_act_fp8_lowrank_cat(const at::Tensor& x, const std::optional<at::Tensor>& smooth,
                                                               const at::Tensor& lora_down, const at::Tensor& inv_c) {
  const char* op = "quantize_act_fp8_lowrank_cat";
  const auto device = x.device();
  check_tensor(op, "x", x, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, -1});
  const int64_t M = x.size(0), K = x.size(1);
  QENGINE_CHECK(op, K > 0 && K % 16 == 0, "K=", K, " is not supported: K must be a positive multiple of 16");
  at::Tensor smooth_t;
  if (smooth.has_value()) {
    check_tensor(op, "smooth", *smooth, device, {at::kBFloat16, at::kHalf, at::kFloat}, {K});
    smooth_t = (smooth->scalar_type() == x.scalar_type() || smooth->scalar_type() == at::kFloat)
                   ? *smooth
                   : smooth->to(at::kFloat);
  }
  check_tensor(op, "lora_down", lora_down, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, K});
  const int64_t rank = lora_down.size(0);
  QENGINE_CHECK(op, rank > 0 && rank % 16 == 0 && rank <= 256, "the rank (rows of lora_down) must be a multiple of "
                "16 in 16..256, got ", rank);
  check_tensor(op, "inv_c", inv_c, device, {at::kFloat}, {rank});
  check_arch(op, device);

  c10::cuda::CUDAGuard guard(device);
  at::Tensor xa = reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 ? x.clone() : x;
  at::Tensor down = lora_down.scalar_type() == at::kBFloat16 ? lora_down : lora_down.to(at::kBFloat16);
  if (reinterpret_cast<uintptr_t>(down.data_ptr()) % 16) down = down.clone();
  auto q = at::empty({M, K + lowrank_cat_width(static_cast<int>(rank))}, x.options().dtype(at::kFloat8_e4m3fn));
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
  p.q_type = QuantType::kFP8E4M3;
  p.sm_count = device_arch(device).sm_count;
  p.lora_down = down.data_ptr();
  p.rank = static_cast<int>(rank);
  p.lowrank_inv_c = inv_c.data_ptr<float>();
  const cudaError_t err = qengine::quantize_act(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed for M=", M, " K=", K, " rank=", rank,
                                     ": ", cudaGetErrorString(err)));
  return {q, scale};
}

// The same, with the low-rank product given (lowrank [M, r] fp32 = (x / smooth) @ lora_down^T,
// e.g. from cuBLAS): the one-pass row kernel quantizes x and writes the branch's columns.
std::tuple<at::Tensor, at::Tensor> quantize_act_fp8_lowrank_cat_from(const at::Tensor& x,
                                                                    const std::optional<at::Tensor>& smooth,
                                                                    const at::Tensor& lowrank, const at::Tensor& inv_c) {
  const char* op = "quantize_act_fp8_lowrank_cat_from";
  const auto device = x.device();
  check_tensor(op, "x", x, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, -1});
  const int64_t M = x.size(0), K = x.size(1);
  QENGINE_CHECK(op, K > 0 && K % 16 == 0, "K=", K, " is not supported: K must be a positive multiple of 16");
  at::Tensor smooth_t;
  if (smooth.has_value()) {
    check_tensor(op, "smooth", *smooth, device, {at::kBFloat16, at::kHalf, at::kFloat}, {K});
    smooth_t = (smooth->scalar_type() == x.scalar_type() || smooth->scalar_type() == at::kFloat)
                   ? *smooth
                   : smooth->to(at::kFloat);
  }
  check_tensor(op, "lowrank", lowrank, device, {at::kFloat}, {M, -1});
  const int64_t rank = lowrank.size(1);
  QENGINE_CHECK(op, rank > 0 && rank % 16 == 0 && rank <= 256, "the rank (columns of lowrank) must be a multiple "
                "of 16 in 16..256, got ", rank);
  check_tensor(op, "inv_c", inv_c, device, {at::kFloat}, {rank});
  check_arch(op, device);

  c10::cuda::CUDAGuard guard(device);
  at::Tensor xa = reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 ? x.clone() : x;
  auto q = at::empty({M, K + lowrank_cat_width(static_cast<int>(rank))}, x.options().dtype(at::kFloat8_e4m3fn));
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
  p.q_type = QuantType::kFP8E4M3;
  p.sm_count = device_arch(device).sm_count;
  p.rank = static_cast<int>(rank);
  p.lowrank_inv_c = inv_c.data_ptr<float>();
  p.lowrank_in = lowrank.data_ptr<float>();
  const cudaError_t err = qengine::quantize_act(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed for M=", M, " K=", K, " rank=", rank,
                                     ": ", cudaGetErrorString(err)));
  return {q, scale};
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
  m.impl("quantize_act_fp8_lowrank_cat", &qengine::bindings::quantize_act_fp8_lowrank_cat);
  m.impl("quantize_act_fp8_lowrank_cat_from", &qengine::bindings::quantize_act_fp8_lowrank_cat_from);
}
