// torch binding of w8a8_{int8,fp8}_conv2d: checks, the activation pre-pass (per-tensor absmax +
// quantization of each input half), the arch dispatch of the conv family, and debug entry
// points (qengine._C.qconv2d_with_config & co) to force a tile config.
//
// Pre-quantized input: x may already be 8-bit (the op's q dtype, contiguous NHWC), written by a
// producer that applied the static scale x_scale itself (group_norm_quant_*); the pre-pass is
// skipped and out_dtype names the output dtype.
//
// Split shortcut: with x2 the conv input is concat([x, x2], channels) but each half keeps its own
// activation scale. A scale per input channel group does not factor out of one accumulator, so
// the op runs one implicit GEMM per half over that half's weight channels (read in place, no
// weight copy on sm90) and the second one adds the first's output through its residual input.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <vector>

#include "common.h"
#include "qengine/conv2d.h"
#include "qengine/w8a8_gemm.h"

namespace qengine::bindings {
namespace {

struct ConvOp {
  const char* name;
  QuantType q_type;
  at::ScalarType q_dtype;
};

ConvOp conv_op(QuantType t) {
  return t == QuantType::kInt8 ? ConvOp{"w8a8_int8_conv2d", t, at::kChar}
                               : ConvOp{"w8a8_fp8_conv2d", t, at::kFloat8_e4m3fn};
}

void check_pair(const char* op, const char* name, c10::IntArrayRef v, int64_t lo) {
  QENGINE_CHECK(op, v.size() == 2 && v[0] >= lo && v[1] >= lo, name, " must be two integers >= ", lo, ", got ", v);
}

// The one arch-dispatch point of the conv family: the sm_90a implicit-GEMM kernels on sm_90;
// else im2col + the mma.sync GEMM (INT8: sm_80+, FP8: sm_89+); else an error naming the arch.
QConvPlan dispatch_config(const ConvOp& g, const at::Device& device, int64_t M, int64_t N, int64_t K) {
  const DeviceArch arch = device_arch(device);
  const bool sm90 = arch.major == 9 && arch.minor == 0 && has_code_for(device, 90) &&
                    conv_tile_config_compiled(QConvTileConfig::kSm90_128x128x128_S4, g.q_type);
  if (sm90) return choose_conv_plan(M, static_cast<int>(N), K, arch.sm_count);
  const int min_cc = g.q_type == QuantType::kFP8E4M3 ? 89 : 80;
  const bool mma = has_code_for(device, min_cc) && conv_tile_config_compiled(QConvTileConfig::kIm2colGemmSm80, g.q_type);
  QENGINE_CHECK(g.name, mma, "no kernel for ", device_arch_str(device), " in this build (compiled archs: ",
                compiled_archs_str(), "; ", g.q_type == QuantType::kFP8E4M3 ? "FP8 needs sm_89 or newer" : "INT8 needs sm_80 or newer",
                "); rebuild with QENGINE_CUDA_ARCHS including this GPU, or use backend='reference'");
  return {QConvTileConfig::kIm2colGemmSm80, 1};
}

// "sm90_128x160x128_s4" or, split-K, "sm90_128x160x128_s4_split2".
std::string conv_plan_name(const QConvPlan& plan) {
  std::string name = conv_tile_config_name(plan.config);
  return plan.splits > 1 ? cat(name, "_split", plan.splits) : name;
}

// Row stride (elements between consecutive pixels) of an NHWC tensor whose channels are
// unit-stride and whose pixels are packed rows of ld >= C elements: a contiguous tensor (ld = C)
// or a channel slice x_cat[..., a:b] of a contiguous concat (ld = channels of the concat).
// Strides of size-1 dims are ignored (torch leaves them arbitrary); -1 if t is no such view.
int64_t nhwc_row_stride(const at::Tensor& t) {
  if (t.is_contiguous()) return t.size(3);
  const int64_t H = t.size(1), W = t.size(2);
  int64_t ld = -1;
  if (W > 1) ld = t.stride(2);
  else if (H > 1) ld = t.stride(1);
  else if (t.size(0) > 1) ld = t.stride(0);
  if (ld < t.size(3) || (t.size(3) > 1 && t.stride(3) != 1)) return -1;
  if ((W > 1 && t.stride(2) != ld) || (H > 1 && t.stride(1) != W * ld) || (t.size(0) > 1 && t.stride(0) != H * W * ld))
    return -1;
  return ld;
}

int64_t check_nhwc_rows(const char* op, const char* name, const at::Tensor& t, const at::Device& device,
                        at::ScalarType dtype, int64_t B, int64_t H, int64_t W) {
  QENGINE_CHECK(op, t.defined() && t.dim() == 4, name, " must be a 4-D NHWC tensor, got shape ", t.sizes());
  QENGINE_CHECK(op, t.device() == device, name, " is on ", t.device(), " but the other operands are on ", device);
  QENGINE_CHECK(op, t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  QENGINE_CHECK(op, (B < 0 || t.size(0) == B) && (H < 0 || t.size(1) == H) && (W < 0 || t.size(2) == W), name,
                " must have shape [", B, ", ", H, ", ", W, ", *], got ", t.sizes());
  const int64_t ld = nhwc_row_stride(t);
  QENGINE_CHECK(op, ld > 0 && ld % 8 == 0, name, " must be contiguous NHWC or a channel slice of one (strides ",
                t.strides(), " for shape ", t.sizes(), ")");
  QENGINE_CHECK(op, reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, name,
                " must start at a 16-byte aligned address (channel offset a multiple of 8)");
  return ld;
}

struct Geometry {
  int64_t B, H, W, C, O, kh, kw, Ho, Wo;
  int64_t sh, sw, ph, pw, dh, dw;
};

// Quantizes one input half with its static scale or its dynamic per-tensor absmax scale.
// Returns (q, scale [1] f32 tensor the kernels read on the device).
std::pair<at::Tensor, at::Tensor> quantize_half(const ConvOp& g, const at::Tensor& x, const std::optional<at::Tensor>& static_scale,
                                                cudaStream_t stream) {
  auto q = at::empty(x.sizes(), x.options().dtype(g.q_dtype));
  const FloatType xt = float_type(g.name, "x", x.scalar_type());
  at::Tensor scale = static_scale.has_value() ? *static_scale : at::empty({1}, x.options().dtype(at::kFloat));
  at::Tensor absmax;
  cudaError_t err = cudaSuccess;
  const int64_t rows = x.size(0) * x.size(1) * x.size(2), cols = x.size(3), ld = nhwc_row_stride(x);
  if (!static_scale.has_value()) {
    absmax = at::empty({1}, x.options().dtype(at::kInt));
    err = conv_absmax(x.data_ptr(), rows, cols, ld, xt, reinterpret_cast<unsigned int*>(absmax.data_ptr()), stream);
  }
  if (err == cudaSuccess)
    err = conv_quantize(x.data_ptr(), rows, cols, ld, xt, g.q_type, static_scale.has_value() ? scale.data_ptr<float>() : nullptr,
                        absmax.defined() ? reinterpret_cast<const unsigned int*>(absmax.data_ptr()) : nullptr, q.data_ptr(),
                        static_scale.has_value() ? nullptr : scale.data_ptr<float>(), stream);
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", g.name, ": activation quantization of shape ", x.sizes(), " failed: ",
                                     cudaGetErrorString(err)));
  return {q, scale};
}

// One half on the mma.sync path: explicit im2col (skipped for 1x1 stride-1 unpadded convs, whose
// NHWC activation already is the GEMM operand) + the W8A8 GEMM.
at::Tensor im2col_gemm_half(const ConvOp& g, const Geometry& d, const at::Tensor& q, const at::Tensor& scale,
                            const at::Tensor& w_half, const at::Tensor& w_scale, const at::Tensor& bias_t,
                            at::ScalarType out_dtype, cudaStream_t stream) {
  const int64_t C = q.size(3), M = d.B * d.Ho * d.Wo, K = d.kh * d.kw * C;
  at::Tensor cols = q;
  const bool identity = d.kh == 1 && d.kw == 1 && d.sh == 1 && d.sw == 1 && d.ph == 0 && d.pw == 0;
  if (!identity) {
    cols = at::empty({M, K}, q.options());
    const cudaError_t err = conv_im2col(q.data_ptr(), d.B, d.H, d.W, C, d.kh, d.kw, d.sh, d.sw, d.ph, d.pw, d.dh, d.dw,
                                        d.Ho, d.Wo, cols.data_ptr(), stream);
    TORCH_CHECK(err == cudaSuccess, cat("qengine::", g.name, ": im2col failed: ", cudaGetErrorString(err)));
  }
  auto a_scale = scale.expand({M}).contiguous();
  auto out = at::empty({M, d.O}, q.options().dtype(out_dtype));
  W8A8GemmParams p{};
  p.a = cols.data_ptr();
  p.lda = K;
  p.a_scale = a_scale.data_ptr<float>();
  p.w = w_half.data_ptr();
  p.ldw = K;
  p.w_scale = w_scale.data_ptr<float>();
  p.bias = bias_t.defined() ? bias_t.data_ptr() : nullptr;
  p.out = out.data_ptr();
  p.ldo = d.O;
  p.M = static_cast<int>(M);
  p.N = static_cast<int>(d.O);
  p.K = static_cast<int>(K);
  p.in_type = g.q_type;
  p.out_type = float_type(g.name, "out", out_dtype);
  p.sm_count = device_arch(q.device()).sm_count;
  const W8A8TileConfig cfg = choose_tile_config(p.M, p.N, p.K, g.q_type, false);
  at::Tensor workspace;
  p.workspace_bytes = w8a8_gemm_workspace_bytes(p, cfg);
  if (p.workspace_bytes > 0) {
    workspace = at::empty({static_cast<int64_t>(p.workspace_bytes)}, q.options().dtype(at::kByte));
    p.workspace = workspace.data_ptr();
  }
  const cudaError_t err = w8a8_gemm(p, cfg, stream);
  TORCH_CHECK(err == cudaSuccess, cat("qengine::", g.name, ": im2col GEMM (", tile_config_name(cfg), ") failed for M=", M,
                                     " N=", d.O, " K=", K, ": ", cudaGetErrorString(err)));
  return out.view({d.B, d.Ho, d.Wo, d.O});
}

at::Tensor run_conv(const ConvOp& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& w_scale,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& x_scale, c10::IntArrayRef stride,
                    c10::IntArrayRef padding, c10::IntArrayRef dilation, const std::optional<at::Tensor>& x2,
                    const std::optional<at::Tensor>& x2_scale, const std::optional<at::Tensor>& residual,
                    std::optional<at::ScalarType> out_dtype_arg, const QConvPlan* forced) {
  const char* op = g.name;
  const auto device = x.device();
  const bool prequant = x.scalar_type() == g.q_dtype;
  QENGINE_CHECK(op, prequant || x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf, "the CUDA kernel "
                "takes bfloat16 or float16 activations or pre-quantized ", g.q_dtype, " ones, got x of dtype ",
                x.scalar_type(), " (float32 runs only with backend='reference')");
  const at::ScalarType out_dtype = out_dtype_arg.has_value() ? *out_dtype_arg : x.scalar_type();
  if (prequant) {
    QENGINE_CHECK(op, x_scale.has_value(), "a pre-quantized x (dtype ", x.scalar_type(), ") needs its x_scale");
    QENGINE_CHECK(op, out_dtype_arg.has_value() && (out_dtype == at::kBFloat16 || out_dtype == at::kHalf),
                  "a pre-quantized x needs out_dtype bfloat16 or float16, got ",
                  out_dtype_arg.has_value() ? c10::toString(out_dtype) : "none");
    QENGINE_CHECK(op, !x2.has_value(), "x2 (split shortcut) is not supported with a pre-quantized x");
    QENGINE_CHECK(op, x.is_contiguous(), "a pre-quantized x must be contiguous NHWC, got strides ", x.strides());
  } else {
    QENGINE_CHECK(op, out_dtype == x.scalar_type(), "out_dtype ", out_dtype, " differs from x's dtype ", x.scalar_type(),
                  " (the output takes the activation dtype)");
  }
  check_nhwc_rows(op, "x", x, device, x.scalar_type(), -1, -1, -1);
  check_pair(op, "stride", stride, 1);
  check_pair(op, "padding", padding, 0);
  check_pair(op, "dilation", dilation, 1);
  Geometry d{};
  d.B = x.size(0), d.H = x.size(1), d.W = x.size(2);
  const int64_t C1 = x.size(3);
  int64_t C2 = 0;
  if (x2.has_value()) {
    check_nhwc_rows(op, "x2", *x2, device, x.scalar_type(), d.B, d.H, d.W);
    C2 = x2->size(3);
  }
  QENGINE_CHECK(op, !x2_scale.has_value() || x2.has_value(), "x2_scale is given without x2");
  d.C = C1 + C2;
  QENGINE_CHECK(op, C1 > 0 && C1 % 16 == 0 && C2 % 16 == 0, "input channels ", C1, x2.has_value() ? cat(" + ", C2) : "",
                " are not supported by the CUDA kernel: each input's channel count must be a positive multiple of 16");
  check_tensor(op, "w", w, device, {g.q_dtype}, {-1, -1, -1, d.C});
  d.O = w.size(0), d.kh = w.size(1), d.kw = w.size(2);
  QENGINE_CHECK(op, d.O > 0 && d.O % 8 == 0, "O=", d.O, " output channels are not supported by the CUDA kernel: O must be a "
                "positive multiple of 8 (16-byte output rows); keep this conv in 16 bits");
  check_tensor(op, "w_scale", w_scale, device, {at::kFloat}, {d.O});
  if (bias.has_value()) check_tensor(op, "bias", *bias, device, {at::kBFloat16, at::kHalf, at::kFloat}, {d.O});
  if (x_scale.has_value()) check_tensor(op, "x_scale", *x_scale, device, {at::kFloat}, {1});
  if (x2_scale.has_value()) check_tensor(op, "x2_scale", *x2_scale, device, {at::kFloat}, {1});
  d.sh = stride[0], d.sw = stride[1], d.ph = padding[0], d.pw = padding[1], d.dh = dilation[0], d.dw = dilation[1];
  d.Ho = (d.H + 2 * d.ph - d.dh * (d.kh - 1) - 1) / d.sh + 1;
  d.Wo = (d.W + 2 * d.pw - d.dw * (d.kw - 1) - 1) / d.sw + 1;
  QENGINE_CHECK(op, d.Ho > 0 && d.Wo > 0, "input ", d.H, "x", d.W, " is too small for a ", d.kh, "x", d.kw,
                " kernel with padding ", padding);
  if (residual.has_value()) check_tensor(op, "residual", *residual, device, {out_dtype}, {d.B, d.Ho, d.Wo, d.O});
  const int64_t M = d.B * d.Ho * d.Wo;
  QENGINE_CHECK(op, M <= INT32_MAX && d.B * d.H * d.W * d.C <= INT32_MAX * int64_t(16), "tensor too large: ", x.sizes());
  QENGINE_CHECK(op, reinterpret_cast<uintptr_t>(w.data_ptr()) % 16 == 0,
                "w must start at a 16-byte aligned address (a view at an offset is not supported)");

  QConvPlan plan;
  if (forced != nullptr) {
    plan = *forced;
    QENGINE_CHECK(op, conv_tile_config_compiled(plan.config, g.q_type), "tile config ", conv_tile_config_name(plan.config),
                  " is not compiled into this build (archs: ", compiled_archs_str(), ")");
    const int need = conv_tile_config_is_sm90(plan.config) ? 90 : (g.q_type == QuantType::kFP8E4M3 ? 89 : 80);
    QENGINE_CHECK(op, has_code_for(device, need), "tile config ", conv_tile_config_name(plan.config), " cannot run on ",
                  device_arch_str(device));
  } else {
    plan = dispatch_config(g, device, M, d.O, d.kh * d.kw * d.C);
  }
  const QConvTileConfig cfg = plan.config;

  c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  auto out = at::empty({d.B, d.Ho, d.Wo, d.O}, x.options().dtype(out_dtype));
  if (M == 0) return out;
  at::Tensor bias_t;
  if (bias.has_value()) bias_t = bias->scalar_type() == out_dtype ? *bias : bias->to(out_dtype);

  auto [q1, s1] = prequant ? std::make_pair(x, *x_scale) : quantize_half(g, x, x_scale, stream);
  at::Tensor q2, s2;
  if (x2.has_value()) std::tie(q2, s2) = quantize_half(g, *x2, x2_scale, stream);

  if (!conv_tile_config_is_sm90(cfg)) {
    const auto w_half = [&](int64_t lo, int64_t hi) {
      return (lo == 0 && hi == d.C ? w : w.slice(3, lo, hi).contiguous()).view({d.O, -1});
    };
    out = im2col_gemm_half(g, d, q1, s1, w_half(0, C1), w_scale, bias_t, out_dtype, stream);
    if (x2.has_value()) out.add_(im2col_gemm_half(g, d, q2, s2, w_half(C1, d.C), w_scale, at::Tensor(), out_dtype, stream));
    if (residual.has_value()) out.add_(*residual);
    return out;
  }

  QConv2dParams p{};
  p.w_channels = d.C;
  p.w_scale = w_scale.data_ptr<float>();
  p.out = out.data_ptr();
  p.B = static_cast<int>(d.B), p.H = static_cast<int>(d.H), p.W = static_cast<int>(d.W), p.O = static_cast<int>(d.O);
  p.kh = static_cast<int>(d.kh), p.kw = static_cast<int>(d.kw);
  p.stride_h = static_cast<int>(d.sh), p.stride_w = static_cast<int>(d.sw);
  p.pad_h = static_cast<int>(d.ph), p.pad_w = static_cast<int>(d.pw);
  p.dil_h = static_cast<int>(d.dh), p.dil_w = static_cast<int>(d.dw);
  p.Ho = static_cast<int>(d.Ho), p.Wo = static_cast<int>(d.Wo);
  p.in_type = g.q_type;
  p.out_type = float_type(op, "out_dtype", out_dtype);
  p.sm_count = device_arch(device).sm_count;
  p.splits = plan.splits;

  const auto launch = [&](const at::Tensor& q, const at::Tensor& s, int64_t channel_offset, const void* bias_ptr,
                          const void* residual_ptr) {
    p.x = q.data_ptr();
    p.C = static_cast<int>(q.size(3));
    p.x_scale = s.data_ptr<float>();
    p.w = static_cast<const uint8_t*>(w.data_ptr()) + channel_offset;  // 1-byte elements
    p.bias = bias_ptr;
    p.residual = residual_ptr;
    at::Tensor workspace;
    p.workspace = nullptr;
    p.workspace_bytes = qconv2d_sm90_workspace_bytes(p, cfg);
    if (p.workspace_bytes > 0) {
      workspace = at::empty({static_cast<int64_t>(p.workspace_bytes)}, x.options().dtype(at::kByte));
      p.workspace = workspace.data_ptr();
    }
    const cudaError_t err = qconv2d_sm90(p, cfg, stream);
    TORCH_CHECK(err == cudaSuccess, cat("qengine::", op, ": kernel ", conv_plan_name(plan), " failed for x ",
                                       q.sizes(), " w ", w.sizes(), " stride ", stride, " padding ", padding, " dilation ",
                                       dilation, ": ", cudaGetErrorString(err)));
  };
  launch(q1, s1, 0, bias_t.defined() ? bias_t.data_ptr() : nullptr, residual.has_value() ? residual->data_ptr() : nullptr);
  if (x2.has_value()) launch(q2, s2, C1, nullptr, out.data_ptr());
  return out;
}

#define QENGINE_CONV_ENTRY(NAME, QT)                                                                                     \
  at::Tensor NAME(const at::Tensor& x, const at::Tensor& w, const at::Tensor& w_scale, const std::optional<at::Tensor>& bias, \
                  const std::optional<at::Tensor>& x_scale, c10::IntArrayRef stride, c10::IntArrayRef padding,           \
                  c10::IntArrayRef dilation, const std::optional<at::Tensor>& x2,                                         \
                  const std::optional<at::Tensor>& x2_scale, const std::optional<at::Tensor>& residual,                   \
                  std::optional<at::ScalarType> out_dtype) {                                                              \
    return run_conv(conv_op(QT), x, w, w_scale, bias, x_scale, stride, padding, dilation, x2, x2_scale, residual,        \
                    out_dtype, nullptr);                                                                                  \
  }
QENGINE_CONV_ENTRY(w8a8_int8_conv2d, QuantType::kInt8)
QENGINE_CONV_ENTRY(w8a8_fp8_conv2d, QuantType::kFP8E4M3)
#undef QENGINE_CONV_ENTRY

// A config name, optionally with "_split<S>" (sm90 configs, 2 <= S <= kMaxConvSplits).
QConvPlan conv_plan_from_name(const std::string& name) {
  std::string base = name;
  int splits = 1;
  const size_t at = name.rfind("_split");
  if (at != std::string::npos) {
    base = name.substr(0, at);
    const std::string digits = name.substr(at + 6);
    const bool ok = !digits.empty() && digits.size() <= 3 && digits.find_first_not_of("0123456789") == std::string::npos;
    splits = ok ? std::stoi(digits) : 0;
    TORCH_CHECK_VALUE(splits >= 2 && splits <= kMaxConvSplits, cat("qengine: conv config '", name, "': the split count after "
                      "'_split' must be 2..", kMaxConvSplits));
  }
  for (int i = 0; i < static_cast<int>(QConvTileConfig::kCount); ++i) {
    auto c = static_cast<QConvTileConfig>(i);
    if (base != conv_tile_config_name(c)) continue;
    TORCH_CHECK_VALUE(splits == 1 || conv_tile_config_is_sm90(c), cat("qengine: conv config '", name,
                      "': split-K exists only for the sm90 configs"));
    return {c, splits};
  }
  TORCH_CHECK_VALUE(false, cat("qengine: unknown conv tile config '", name, "'"));
}

QuantType conv_quant_type(const std::string& in_dtype) {
  TORCH_CHECK_VALUE(in_dtype == "int8" || in_dtype == "float8_e4m3fn", "in_dtype must be 'int8' or 'float8_e4m3fn'");
  return in_dtype == "int8" ? QuantType::kInt8 : QuantType::kFP8E4M3;
}

}  // namespace

void register_conv_debug(pybind11::module_& m) {
  m.def(
      "conv_quantize_input",
      [](const at::Tensor& x, const std::optional<at::Tensor>& x_scale, const std::string& q_dtype) {
        const ConvOp g = conv_op(conv_quant_type(q_dtype));
        QENGINE_CHECK(g.name, x.scalar_type() == at::kBFloat16 || x.scalar_type() == at::kHalf,
                      "x must be bfloat16 or float16, got ", x.scalar_type());
        check_nhwc_rows(g.name, "x", x, x.device(), x.scalar_type(), -1, -1, -1);
        QENGINE_CHECK(g.name, x.size(3) % 8 == 0, "channels must be a multiple of 8, got ", x.size(3));
        if (x_scale.has_value()) check_tensor(g.name, "x_scale", *x_scale, x.device(), {at::kFloat}, {1});
        c10::cuda::CUDAGuard guard(x.device());
        auto [q, s] = quantize_half(g, x, x_scale, c10::cuda::getCurrentCUDAStream().stream());
        return std::make_tuple(q, s);
      },
      "The conv's activation pre-pass alone: (q [B,H,W,C] packed, scale [1]) for q_dtype 'int8'|'float8_e4m3fn'. "
      "Debug/test/benchmark entry point.",
      pybind11::arg("x"), pybind11::arg("x_scale"), pybind11::arg("q_dtype"));
  m.def(
      "qconv2d_with_config",
      [](const at::Tensor& x, const at::Tensor& w, const at::Tensor& w_scale, const std::optional<at::Tensor>& bias,
         const std::optional<at::Tensor>& x_scale, std::vector<int64_t> stride, std::vector<int64_t> padding,
         std::vector<int64_t> dilation, const std::string& config, const std::optional<at::Tensor>& x2,
         const std::optional<at::Tensor>& x2_scale, const std::optional<at::Tensor>& residual,
         const std::string& out_dtype) {
        const QConvPlan plan = conv_plan_from_name(config);
        TORCH_CHECK_VALUE(out_dtype.empty() || out_dtype == "bfloat16" || out_dtype == "float16",
                          cat("qengine: out_dtype must be '', 'bfloat16' or 'float16', got '", out_dtype, "'"));
        std::optional<at::ScalarType> out;
        if (!out_dtype.empty()) out = out_dtype == "bfloat16" ? at::kBFloat16 : at::kHalf;
        TORCH_CHECK_VALUE(w.scalar_type() == at::kChar || w.scalar_type() == at::kFloat8_e4m3fn,
                          cat("qengine: w must be int8 or float8_e4m3fn, got ", w.scalar_type()));
        const QuantType t = w.scalar_type() == at::kChar ? QuantType::kInt8 : QuantType::kFP8E4M3;
        return run_conv(conv_op(t), x, w, w_scale, bias, x_scale, stride, padding, dilation, x2, x2_scale, residual,
                        out, &plan);
      },
      "w8a8 conv2d (the op's arguments, w int8|fp8 picks the op) with a forced tile config, optionally split-K with a "
      "'_split<S>' suffix (e.g. 'sm90_128x160x128_s4_split2'); out_dtype 'bfloat16'|'float16' for a pre-quantized x. "
      "Debug/test entry point.",
      pybind11::arg("x"), pybind11::arg("w"), pybind11::arg("w_scale"), pybind11::arg("bias"), pybind11::arg("x_scale"),
      pybind11::arg("stride"), pybind11::arg("padding"), pybind11::arg("dilation"), pybind11::arg("config"),
      pybind11::arg("x2") = std::nullopt, pybind11::arg("x2_scale") = std::nullopt, pybind11::arg("residual") = std::nullopt,
      pybind11::arg("out_dtype") = "");
  m.def(
      "conv_configs",
      []() {
        std::vector<std::string> names;
        for (int i = 0; i < static_cast<int>(QConvTileConfig::kCount); ++i)
          names.emplace_back(conv_tile_config_name(static_cast<QConvTileConfig>(i)));
        return names;
      },
      "Names of every conv tile config (compiled or not).");
  m.def(
      "conv_config_available",
      [](const std::string& config, const std::string& in_dtype, int64_t device_index) {
        const QConvTileConfig c = conv_plan_from_name(config).config;
        const QuantType t = conv_quant_type(in_dtype);
        const int need = conv_tile_config_is_sm90(c) ? 90 : (t == QuantType::kFP8E4M3 ? 89 : 80);
        return conv_tile_config_compiled(c, t) && has_code_for(at::Device(at::kCUDA, device_index), need);
      },
      "Whether the conv config is compiled for in_dtype ('int8'|'float8_e4m3fn') and runs on the CUDA device.",
      pybind11::arg("config"), pybind11::arg("in_dtype"), pybind11::arg("device_index") = 0);
  m.def(
      "conv_heuristic",
      [](int64_t M, int64_t N, int64_t K, const std::string& in_dtype, int64_t device_index) {
        return conv_plan_name(dispatch_config(conv_op(conv_quant_type(in_dtype)), at::Device(at::kCUDA, device_index), M, N, K));
      },
      "The conv tile config the op would pick for the implicit GEMM (M=B*Ho*Wo, N=O, K=kh*kw*C) on the device, with "
      "'_split<S>' where it splits K.",
      pybind11::arg("M"), pybind11::arg("N"), pybind11::arg("K"), pybind11::arg("in_dtype"), pybind11::arg("device_index") = 0);
}

}  // namespace qengine::bindings

TORCH_LIBRARY_IMPL(qengine, CUDA, m) {
  m.impl("w8a8_int8_conv2d", &qengine::bindings::w8a8_int8_conv2d);
  m.impl("w8a8_fp8_conv2d", &qengine::bindings::w8a8_fp8_conv2d);
}
