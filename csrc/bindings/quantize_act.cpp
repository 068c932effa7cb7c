// torch binding of quantize_act_{int8,fp8}, their low-rank-cat / gelu-cat / GEGLU variants and
// layer_norm_quant_{int8,fp8}: checks, arch
// dispatch, launcher call.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "common.h"
#include "qengine/layer_norm_quant.h"
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

// The checked activation input of every quantize op: x [M, K] (K a multiple of 16) and smooth [K],
// the latter in a dtype the kernel reads (x's own or fp32; an fp32 copy of another 16-bit type is exact).
struct Input {
  at::Tensor x, smooth;
  int64_t M, K;
};

// smooth [K] (checked) in a dtype the kernel reads next to input of x's dtype and device: x's own
// or fp32 (an fp32 copy of another 16-bit type is exact); undefined without smoothing.
at::Tensor checked_smooth(const char* op, const std::optional<at::Tensor>& smooth, int64_t K, const at::Tensor& x) {
  if (!smooth.has_value()) return {};
  check_tensor(op, "smooth", *smooth, x.device(), {at::kBFloat16, at::kHalf, at::kFloat}, {K});
  return (smooth->scalar_type() == x.scalar_type() || smooth->scalar_type() == at::kFloat) ? *smooth
                                                                                          : smooth->to(at::kFloat);
}

Input checked_input(const char* op, const at::Tensor& x, const std::optional<at::Tensor>& smooth) {
  check_tensor(op, "x", x, x.device(), {at::kBFloat16, at::kHalf, at::kFloat}, {-1, -1});
  const int64_t M = x.size(0), K = x.size(1);
  QENGINE_CHECK(op, K > 0 && K % 16 == 0, "K=", K, " is not supported: K must be a positive multiple of 16");
  return {x, checked_smooth(op, smooth, K, x), M, K};
}

// t itself, or an aligned copy where a view starts at an odd offset (the kernels' vector loads
// need 16-byte aligned rows).
at::Tensor aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 ? t.clone() : t; }

// Launcher parameters for `in` quantized into q [M, ldq] (ldq = K, or K + the cat width) and scale [M].
// Call under the device guard: the aligned copy of x is made here.
QuantizeActParams base_params(const char* op, Input& in, QuantType qt, const at::Tensor& q, const at::Tensor& scale) {
  in.x = aligned16(in.x);
  QuantizeActParams p{};
  p.x = in.x.data_ptr();
  p.ldx = in.K;
  p.x_type = float_type(op, "x", in.x.scalar_type());
  p.smooth = in.smooth.defined() ? in.smooth.data_ptr() : nullptr;
  p.smooth_type = in.smooth.defined() ? float_type(op, "smooth", in.smooth.scalar_type()) : p.x_type;
  p.q = q.data_ptr();
  p.scale = scale.data_ptr<float>();
  p.M = in.M;
  p.K = in.K;
  p.q_type = qt;
  p.sm_count = device_arch(in.x.device()).sm_count;
  return p;
}

void launch(const char* op, const QuantizeActParams& p) {
  const cudaError_t err = qengine::quantize_act(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed for M=", p.M, " K=", p.K,
                                     " rank=", p.rank, ": ", cudaGetErrorString(err)));
}

// lora_down as the kernel reads it: bf16 (the MMA operand type; other dtypes are rounded once per
// call, an fp32 or fp16 lora_down loses mantissa bits), 16-byte aligned.
at::Tensor down_for_kernel(const at::Tensor& lora_down) {
  at::Tensor d = lora_down.scalar_type() == at::kBFloat16 ? lora_down : lora_down.to(at::kBFloat16);
  return reinterpret_cast<uintptr_t>(d.data_ptr()) % 16 ? d.clone() : d;
}

// lowrank_act's dtype: fp32 by default, or a 16-bit float (the W4A8 GEMM takes it rounded so).
at::ScalarType checked_lowrank_dtype(const char* op, const std::optional<at::ScalarType>& lowrank_dtype) {
  const at::ScalarType t = lowrank_dtype.value_or(at::kFloat);
  QENGINE_CHECK(op, t == at::kFloat || t == at::kBFloat16 || t == at::kHalf, "lowrank_dtype must be torch.float32, "
                "torch.bfloat16 or torch.float16, got ", t);
  return t;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act(const char* op, QuantType qt, const at::Tensor& x,
                                                            const std::optional<at::Tensor>& smooth,
                                                            const std::optional<at::Tensor>& lora_down,
                                                            const std::optional<at::ScalarType>& lowrank_dtype) {
  Input in = checked_input(op, x, smooth);
  const at::ScalarType lr_dtype = checked_lowrank_dtype(op, lowrank_dtype);
  const auto device = x.device();
  int64_t rank = 0;
  if (lora_down.has_value()) {
    check_tensor(op, "lora_down", *lora_down, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, in.K});
    rank = lora_down->size(0);
  }
  // Ranks that are multiples of 16 (SVDQuant uses 16..256) run fused in the quantize kernel; any
  // other rank (the op accepts them) gets a separate fp32 matmul on the smoothed input.
  const bool fused_lowrank = rank > 0 && rank % 16 == 0;
  check_arch(op, device);

  c10::cuda::CUDAGuard guard(device);
  auto q = at::empty({in.M, in.K}, x.options().dtype(qt == QuantType::kInt8 ? at::kChar : at::kFloat8_e4m3fn));
  auto scale = at::empty({in.M}, x.options().dtype(at::kFloat));
  QuantizeActParams p = base_params(op, in, qt, q, scale);
  at::Tensor down_bf16, lowrank;
  if (fused_lowrank) {
    down_bf16 = down_for_kernel(*lora_down);
    lowrank = at::empty({in.M, rank}, x.options().dtype(lr_dtype));
    p.lora_down = down_bf16.data_ptr();
    p.lowrank = lowrank.data_ptr();
    p.lowrank_type = float_type(op, "lowrank_dtype", lr_dtype);
    p.rank = static_cast<int>(rank);
  }
  launch(op, p);
  if (!fused_lowrank) {
    if (rank > 0) {
      at::Tensor xs = x.to(at::kFloat);
      if (smooth.has_value()) xs = xs / smooth->to(at::kFloat);
      lowrank = at::matmul(xs, lora_down->to(at::kFloat).t()).to(lr_dtype);
    } else {
      lowrank = at::empty({in.M, 0}, x.options().dtype(lr_dtype));
    }
  }
  return {q, scale, lowrank};
}

void check_cat_rank(const char* op, const char* what, int64_t rank, const at::Tensor& inv_c, const at::Device& device) {
  QENGINE_CHECK(op, rank > 0 && rank % 16 == 0 && rank <= 256, "the rank (", what, ") must be a multiple of 16 in "
                "16..256, got ", rank);
  check_tensor(op, "inv_c", inv_c, device, {at::kFloat}, {rank});
}

// FP8 with the low-rank branch folded into the GEMM's K (qengine/formats/lowrank_cat.py):
// q [M, K + W] (the x part, then the branch's split columns, W = lowrank_cat_width(r)), scale [M].
// `lowrank` given: the product (x / smooth) @ lora_down^T [M, r] fp32 computed by the caller (the
// one-pass row kernel runs); else lora_down [r, K] (the two-pass tile kernel computes it).
std::tuple<at::Tensor, at::Tensor> quantize_cat(const char* op, const at::Tensor& x,
                                                const std::optional<at::Tensor>& smooth,
                                                const std::optional<at::Tensor>& lora_down,
                                                const std::optional<at::Tensor>& lowrank, const at::Tensor& inv_c) {
  Input in = checked_input(op, x, smooth);
  const auto device = x.device();
  int64_t rank;
  if (lowrank.has_value()) {
    check_tensor(op, "lowrank", *lowrank, device, {at::kFloat}, {in.M, -1});
    rank = lowrank->size(1);
    check_cat_rank(op, "columns of lowrank", rank, inv_c, device);
  } else {
    check_tensor(op, "lora_down", *lora_down, device, {at::kBFloat16, at::kHalf, at::kFloat}, {-1, in.K});
    rank = lora_down->size(0);
    check_cat_rank(op, "rows of lora_down", rank, inv_c, device);
  }
  check_arch(op, device);

  c10::cuda::CUDAGuard guard(device);
  auto q = at::empty({in.M, in.K + lowrank_cat_width(static_cast<int>(rank))}, x.options().dtype(at::kFloat8_e4m3fn));
  auto scale = at::empty({in.M}, x.options().dtype(at::kFloat));
  QuantizeActParams p = base_params(op, in, QuantType::kFP8E4M3, q, scale);
  at::Tensor down;
  if (lowrank.has_value()) {
    p.lowrank_in = lowrank->data_ptr<float>();
  } else {
    down = down_for_kernel(*lora_down);
    p.lora_down = down.data_ptr();
  }
  p.rank = static_cast<int>(rank);
  p.lowrank_inv_c = inv_c.data_ptr<float>();
  launch(op, p);
  return {q, scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_act_fp8_lowrank_cat(const at::Tensor& x, const std::optional<at::Tensor>& smooth,
                                                               const at::Tensor& lora_down, const at::Tensor& inv_c) {
  return quantize_cat("quantize_act_fp8_lowrank_cat", x, smooth, lora_down, std::nullopt, inv_c);
}

std::tuple<at::Tensor, at::Tensor> quantize_act_fp8_lowrank_cat_from(const at::Tensor& x,
                                                                    const std::optional<at::Tensor>& smooth,
                                                                    const at::Tensor& lowrank, const at::Tensor& inv_c) {
  return quantize_cat("quantize_act_fp8_lowrank_cat_from", x, smooth, std::nullopt, lowrank, inv_c);
}

// The row kernel on producer input (quantize_act.h), operands checked: [x | gelu_tanh(g)] (x may be
// undefined), or with geglu the GEGLU of g's [h | gate] rows. Returns q [M, K] and scale [M].
std::tuple<at::Tensor, at::Tensor> quantize_producer(const char* op, QuantType qt, const at::Tensor& x, int64_t K_plain,
                                                     const at::Tensor& g_in, int64_t ld_gelu, int64_t K_gelu,
                                                     const at::Tensor& smooth_t, bool geglu) {
  c10::cuda::CUDAGuard guard(g_in.device());
  const at::Tensor g = aligned16(g_in);
  const at::Tensor xp = x.defined() ? aligned16(x) : at::Tensor();
  const int64_t M = g.size(0), K = K_plain + K_gelu;
  auto q = at::empty({M, K}, g.options().dtype(qt == QuantType::kInt8 ? at::kChar : at::kFloat8_e4m3fn));
  auto scale = at::empty({M}, g.options().dtype(at::kFloat));
  QuantizeActParams p{};
  p.x = xp.defined() ? xp.data_ptr() : nullptr;
  p.ldx = K_plain;
  p.x_type = float_type(op, geglu ? "proj" : "gelu_x", g.scalar_type());
  p.smooth = smooth_t.defined() ? smooth_t.data_ptr() : nullptr;
  p.smooth_type = smooth_t.defined() ? float_type(op, "smooth", smooth_t.scalar_type()) : p.x_type;
  p.q = q.data_ptr();
  p.scale = scale.data_ptr<float>();
  p.M = M;
  p.K = K;
  p.q_type = qt;
  p.sm_count = device_arch(g.device()).sm_count;
  p.gelu_x = g.data_ptr();
  p.ld_gelu = ld_gelu;
  p.K_gelu = K_gelu;
  p.geglu = geglu;
  launch(op, p);
  return {q, scale};
}

// The checked operands of a gelu-cat op: x [M, K_plain] (may be absent or empty) and gelu_x [M, K_gelu].
struct GeluCatInput {
  at::Tensor x;  // undefined when there are no plain columns
  int64_t M, K_plain, K_gelu;
};

GeluCatInput checked_gelu_cat(const char* op, const std::optional<at::Tensor>& x, const at::Tensor& gelu_x) {
  check_tensor(op, "gelu_x", gelu_x, gelu_x.device(), {at::kBFloat16, at::kHalf}, {-1, -1});
  const int64_t M = gelu_x.size(0), K_gelu = gelu_x.size(1);
  int64_t K_plain = 0;
  if (x.has_value()) {
    check_tensor(op, "x", *x, gelu_x.device(), {gelu_x.scalar_type()}, {M, -1});
    K_plain = x->size(1);
  }
  QENGINE_CHECK(op, K_gelu > 0 && K_gelu % 16 == 0 && K_plain % 16 == 0, "the columns of x (", K_plain,
                ") and gelu_x (", K_gelu, ") must be multiples of 16, gelu_x's positive");
  return {x.has_value() && K_plain > 0 ? *x : at::Tensor(), M, K_plain, K_gelu};
}

// Gelu-cat input (quantize_act.h): the row [x | gelu_tanh(gelu_x)] quantized without being
// concatenated in memory; x may be absent (the whole row is the gelu part).
std::tuple<at::Tensor, at::Tensor> quantize_gelu_cat(const char* op, QuantType qt, const std::optional<at::Tensor>& x,
                                                     const at::Tensor& gelu_x, const std::optional<at::Tensor>& smooth) {
  const GeluCatInput in = checked_gelu_cat(op, x, gelu_x);
  const at::Tensor smooth_t = checked_smooth(op, smooth, in.K_plain + in.K_gelu, gelu_x);
  check_arch(op, gelu_x.device());

  return quantize_producer(op, qt, in.x, in.K_plain, gelu_x, in.K_gelu, in.K_gelu, smooth_t, false);
}

// Gelu-cat input with the low-rank down-projection: torch's GELU of gelu_x, then the tile kernel
// reads [x | gelu] in place as a two-part row (quantize_act.h says why the GELU is not in the
// kernel). inv_c given: FP8 cat mode (q [M, K + W], no lowrank); else lowrank [M, r] fp32 is the
// third output (undefined in cat mode). Ranks that are not multiples of 16 concatenate with torch
// and take quantize_act's unfused path.
std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_gelu_cat_lowrank(const char* op, QuantType qt,
                                                                         const std::optional<at::Tensor>& x,
                                                                         const at::Tensor& gelu_x,
                                                                         const std::optional<at::Tensor>& smooth,
                                                                         const at::Tensor& lora_down,
                                                                         const std::optional<at::Tensor>& inv_c,
                                                                         const std::optional<at::ScalarType>& lowrank_dtype) {
  const GeluCatInput in = checked_gelu_cat(op, x, gelu_x);
  const at::ScalarType lr_dtype = checked_lowrank_dtype(op, lowrank_dtype);
  const int64_t K = in.K_plain + in.K_gelu;
  const at::Tensor smooth_t = checked_smooth(op, smooth, K, gelu_x);
  check_tensor(op, "lora_down", lora_down, gelu_x.device(), {at::kBFloat16, at::kHalf, at::kFloat}, {-1, K});
  const int64_t rank = lora_down.size(0);
  if (inv_c.has_value()) check_cat_rank(op, "rows of lora_down", rank, *inv_c, gelu_x.device());
  check_arch(op, gelu_x.device());
  if (rank == 0 || rank % 16 != 0) {
    c10::cuda::CUDAGuard guard(gelu_x.device());
    const at::Tensor g = at::gelu(gelu_x, "tanh");
    const at::Tensor row = in.x.defined() ? at::cat({in.x, g}, 1) : g;
    return quantize_act(op, qt, row, smooth, lora_down, lowrank_dtype);
  }

  c10::cuda::CUDAGuard guard(gelu_x.device());
  const at::Tensor xp = in.x.defined() ? aligned16(in.x) : at::Tensor();
  // Plain mode: our GELU kernel also returns each row's absmax, and the tile kernel quantizes in
  // its one pass (quantize_act.h, gelu_absmax). Cat mode's scale depends on the product, so it
  // keeps torch's GELU and the tile kernel's two passes.
  at::Tensor g, amax;
  if (!inv_c.has_value() && in.M > 0) {
    const at::Tensor gx = aligned16(gelu_x);
    g = at::empty({in.M, in.K_gelu}, gelu_x.options());  // contiguous, fresh: 16-byte aligned
    amax = at::empty({in.M}, gelu_x.options().dtype(at::kFloat));
    GeluAbsmaxParams ga{};
    ga.x = xp.defined() ? xp.data_ptr() : nullptr;
    ga.ldx = in.K_plain;
    ga.K_plain = in.K_plain;
    ga.gelu_x = gx.data_ptr();
    ga.ld_gelu = gx.stride(0);
    ga.K_gelu = in.K_gelu;
    ga.x_type = float_type(op, "gelu_x", gelu_x.scalar_type());
    ga.smooth = smooth_t.defined() ? smooth_t.data_ptr() : nullptr;
    ga.smooth_type = smooth_t.defined() ? float_type(op, "smooth", smooth_t.scalar_type()) : ga.x_type;
    ga.gelu_out = g.data_ptr();
    ga.amax = amax.data_ptr<float>();
    ga.M = in.M;
    ga.sm_count = device_arch(gelu_x.device()).sm_count;
    const cudaError_t err = qengine::gelu_absmax(ga, c10::cuda::getCurrentCUDAStream().stream());
    TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": GELU launch failed for M=", in.M, " K=", K, ": ",
                                       cudaGetErrorString(err)));
  } else {
    g = at::gelu(gelu_x, "tanh");  // contiguous, fresh: 16-byte aligned
  }
  const int64_t width = inv_c.has_value() ? lowrank_cat_width(static_cast<int>(rank)) : 0;
  auto q = at::empty({in.M, K + width}, g.options().dtype(qt == QuantType::kInt8 ? at::kChar : at::kFloat8_e4m3fn));
  auto scale = at::empty({in.M}, g.options().dtype(at::kFloat));
  at::Tensor lowrank;
  if (!inv_c.has_value()) lowrank = at::empty({in.M, rank}, g.options().dtype(lr_dtype));
  if (in.M == 0) return {q, scale, lowrank};  // (empty tensors may have null data pointers)
  const at::Tensor down = down_for_kernel(lora_down);
  QuantizeActParams p{};
  p.x = xp.defined() ? xp.data_ptr() : nullptr;
  p.ldx = in.K_plain;
  p.x_type = float_type(op, "gelu_x", g.scalar_type());
  p.smooth = smooth_t.defined() ? smooth_t.data_ptr() : nullptr;
  p.smooth_type = smooth_t.defined() ? float_type(op, "smooth", smooth_t.scalar_type()) : p.x_type;
  p.q = q.data_ptr();
  p.scale = scale.data_ptr<float>();
  p.M = in.M;
  p.K = K;
  p.q_type = qt;
  p.sm_count = device_arch(g.device()).sm_count;
  p.lora_down = down.data_ptr();
  p.rank = static_cast<int>(rank);
  if (inv_c.has_value()) {
    p.lowrank_inv_c = inv_c->data_ptr<float>();
  } else {
    p.lowrank = lowrank.data_ptr();
    p.lowrank_type = float_type(op, "lowrank_dtype", lr_dtype);
  }
  p.x2 = g.data_ptr();
  p.ld_x2 = in.K_gelu;
  p.K_x2 = in.K_gelu;
  if (amax.defined()) p.amax_in = amax.data_ptr<float>();
  launch(op, p);
  return {q, scale, lowrank};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act_int8_gelu_cat_lowrank(
    const std::optional<at::Tensor>& x, const at::Tensor& gelu_x, const std::optional<at::Tensor>& smooth,
    const at::Tensor& lora_down, std::optional<at::ScalarType> lowrank_dtype) {
  return quantize_gelu_cat_lowrank("quantize_act_int8_gelu_cat_lowrank", QuantType::kInt8, x, gelu_x, smooth,
                                   lora_down, std::nullopt, lowrank_dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act_fp8_gelu_cat_lowrank(
    const std::optional<at::Tensor>& x, const at::Tensor& gelu_x, const std::optional<at::Tensor>& smooth,
    const at::Tensor& lora_down, std::optional<at::ScalarType> lowrank_dtype) {
  return quantize_gelu_cat_lowrank("quantize_act_fp8_gelu_cat_lowrank", QuantType::kFP8E4M3, x, gelu_x, smooth,
                                   lora_down, std::nullopt, lowrank_dtype);
}

std::tuple<at::Tensor, at::Tensor> quantize_act_fp8_gelu_cat_lowrank_cat(
    const std::optional<at::Tensor>& x, const at::Tensor& gelu_x, const std::optional<at::Tensor>& smooth,
    const at::Tensor& lora_down, const at::Tensor& inv_c) {
  auto [q, scale, lowrank] = quantize_gelu_cat_lowrank("quantize_act_fp8_gelu_cat_lowrank_cat", QuantType::kFP8E4M3,
                                                       x, gelu_x, smooth, lora_down, inv_c, std::nullopt);
  return {q, scale};
}

std::tuple<at::Tensor, at::Tensor> quantize_act_int8_gelu_cat(const std::optional<at::Tensor>& x, const at::Tensor& gelu_x,
                                                              const std::optional<at::Tensor>& smooth) {
  return quantize_gelu_cat("quantize_act_int8_gelu_cat", QuantType::kInt8, x, gelu_x, smooth);
}

std::tuple<at::Tensor, at::Tensor> quantize_act_fp8_gelu_cat(const std::optional<at::Tensor>& x, const at::Tensor& gelu_x,
                                                             const std::optional<at::Tensor>& smooth) {
  return quantize_gelu_cat("quantize_act_fp8_gelu_cat", QuantType::kFP8E4M3, x, gelu_x, smooth);
}

// GEGLU input (quantize_act.h): proj [M, 2K] = [h | gate]; the row h * gelu_erf(gate) is quantized
// without being written out.
std::tuple<at::Tensor, at::Tensor> quantize_geglu(const char* op, QuantType qt, const at::Tensor& proj,
                                                  const std::optional<at::Tensor>& smooth) {
  check_tensor(op, "proj", proj, proj.device(), {at::kBFloat16, at::kHalf}, {-1, -1});
  const int64_t K2 = proj.size(1);
  QENGINE_CHECK(op, K2 > 0 && K2 % 32 == 0, "proj has ", K2, " columns: GEGLU input needs a positive multiple "
                "of 32 (two halves of a multiple of 16)");
  const int64_t K = K2 / 2;
  const at::Tensor smooth_t = checked_smooth(op, smooth, K, proj);
  check_arch(op, proj.device());

  return quantize_producer(op, qt, at::Tensor(), 0, proj, K2, K, smooth_t, true);
}

std::tuple<at::Tensor, at::Tensor> quantize_act_int8_geglu(const at::Tensor& proj, const std::optional<at::Tensor>& smooth) {
  return quantize_geglu("quantize_act_int8_geglu", QuantType::kInt8, proj, smooth);
}

std::tuple<at::Tensor, at::Tensor> quantize_act_fp8_geglu(const at::Tensor& proj, const std::optional<at::Tensor>& smooth) {
  return quantize_geglu("quantize_act_fp8_geglu", QuantType::kFP8E4M3, proj, smooth);
}

// LayerNorm + quantization (layer_norm_quant.h): q and scale of LayerNorm(x), which is not written.
std::tuple<at::Tensor, at::Tensor> layer_norm_quant(const char* op, QuantType qt, const at::Tensor& x,
                                                    const std::optional<at::Tensor>& weight,
                                                    const std::optional<at::Tensor>& bias, double eps,
                                                    const std::optional<at::Tensor>& smooth) {
  check_tensor(op, "x", x, x.device(), {at::kBFloat16, at::kHalf}, {-1, -1});
  const int64_t M = x.size(0), C = x.size(1);
  QENGINE_CHECK(op, C > 0 && C % 16 == 0 && C <= kLayerNormQuantMaxC, "C=", C, " is not supported: the normalized "
                "dimension must be a positive multiple of 16, at most ", kLayerNormQuantMaxC);
  QENGINE_CHECK(op, eps >= 0, "eps must be >= 0, got ", eps);
  if (weight.has_value()) check_tensor(op, "weight", *weight, x.device(), {x.scalar_type()}, {C});
  if (bias.has_value()) check_tensor(op, "bias", *bias, x.device(), {x.scalar_type()}, {C});
  const at::Tensor smooth_t = checked_smooth(op, smooth, C, x);
  check_arch(op, x.device());

  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xa = aligned16(x);
  const at::Tensor w = weight.has_value() ? aligned16(*weight) : at::Tensor();
  const at::Tensor b = bias.has_value() ? aligned16(*bias) : at::Tensor();
  auto q = at::empty({M, C}, x.options().dtype(qt == QuantType::kInt8 ? at::kChar : at::kFloat8_e4m3fn));
  auto scale = at::empty({M}, x.options().dtype(at::kFloat));
  LayerNormQuantParams p{};
  p.x = xa.data_ptr();
  p.x_type = float_type(op, "x", xa.scalar_type());
  p.weight = w.defined() ? w.data_ptr() : nullptr;
  p.bias = b.defined() ? b.data_ptr() : nullptr;
  p.eps = static_cast<float>(eps);
  p.smooth = smooth_t.defined() ? smooth_t.data_ptr() : nullptr;
  p.smooth_type = smooth_t.defined() ? float_type(op, "smooth", smooth_t.scalar_type()) : p.x_type;
  p.q = q.data_ptr();
  p.scale = scale.data_ptr<float>();
  p.M = M;
  p.C = C;
  p.q_type = qt;
  const cudaError_t err = qengine::layer_norm_quant(p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel launch failed for M=", M, " C=", C, ": ",
                                      cudaGetErrorString(err)));
  return {q, scale};
}

std::tuple<at::Tensor, at::Tensor> layer_norm_quant_int8(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                                         const std::optional<at::Tensor>& bias, double eps,
                                                         const std::optional<at::Tensor>& smooth) {
  return layer_norm_quant("layer_norm_quant_int8", QuantType::kInt8, x, weight, bias, eps, smooth);
}

std::tuple<at::Tensor, at::Tensor> layer_norm_quant_fp8(const at::Tensor& x, const std::optional<at::Tensor>& weight,
                                                        const std::optional<at::Tensor>& bias, double eps,
                                                        const std::optional<at::Tensor>& smooth) {
  return layer_norm_quant("layer_norm_quant_fp8", QuantType::kFP8E4M3, x, weight, bias, eps, smooth);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act_int8(const at::Tensor& x, const std::optional<at::Tensor>& smooth,
                                                                 const std::optional<at::Tensor>& lora_down,
                                                                 std::optional<at::ScalarType> lowrank_dtype) {
  return quantize_act("quantize_act_int8", QuantType::kInt8, x, smooth, lora_down, lowrank_dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> quantize_act_fp8(const at::Tensor& x, const std::optional<at::Tensor>& smooth,
                                                                const std::optional<at::Tensor>& lora_down,
                                                                std::optional<at::ScalarType> lowrank_dtype) {
  return quantize_act("quantize_act_fp8", QuantType::kFP8E4M3, x, smooth, lora_down, lowrank_dtype);
}

}  // namespace
}  // namespace qengine::bindings

TORCH_LIBRARY_IMPL(qengine, CUDA, m) {
  m.impl("quantize_act_int8", &qengine::bindings::quantize_act_int8);
  m.impl("quantize_act_fp8", &qengine::bindings::quantize_act_fp8);
  m.impl("quantize_act_fp8_lowrank_cat", &qengine::bindings::quantize_act_fp8_lowrank_cat);
  m.impl("quantize_act_fp8_lowrank_cat_from", &qengine::bindings::quantize_act_fp8_lowrank_cat_from);
  m.impl("quantize_act_int8_gelu_cat", &qengine::bindings::quantize_act_int8_gelu_cat);
  m.impl("quantize_act_fp8_gelu_cat", &qengine::bindings::quantize_act_fp8_gelu_cat);
  m.impl("quantize_act_int8_gelu_cat_lowrank", &qengine::bindings::quantize_act_int8_gelu_cat_lowrank);
  m.impl("quantize_act_fp8_gelu_cat_lowrank", &qengine::bindings::quantize_act_fp8_gelu_cat_lowrank);
  m.impl("quantize_act_fp8_gelu_cat_lowrank_cat", &qengine::bindings::quantize_act_fp8_gelu_cat_lowrank_cat);
  m.impl("quantize_act_int8_geglu", &qengine::bindings::quantize_act_int8_geglu);
  m.impl("quantize_act_fp8_geglu", &qengine::bindings::quantize_act_fp8_geglu);
  m.impl("layer_norm_quant_int8", &qengine::bindings::layer_norm_quant_int8);
  m.impl("layer_norm_quant_fp8", &qengine::bindings::layer_norm_quant_fp8);
}
