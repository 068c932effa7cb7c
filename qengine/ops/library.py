"""Registration of the ``torch.ops.qengine.*`` custom ops.

The schemas live here, in Python, rather than in a C++ ``TORCH_LIBRARY`` block, because the
package must work with no compiled extension (CPU-only installs): the compiled ``qengine._C``
only adds CUDA kernels with ``TORCH_LIBRARY_IMPL(qengine, CUDA, ...)``.

Per op: the float32 reference is the CPU kernel, a shape-only fake serves torch.compile and
meta tensors, and, where ``qengine._C`` has no CUDA kernel for it, a CUDA kernel that fails
loudly naming the GPU arch (the reference is never a silent fallback on a GPU).
"""
from __future__ import annotations

import torch

from ..formats.lowrank_cat import lowrank_cat_layout
from . import checks
from . import reference as ref
from . import reference_norms as ref_norms

_GEMM_ARGS = ("Tensor a, Tensor a_scale, Tensor w, Tensor w_scale, Tensor? bias, Tensor? lowrank_act, "
              "Tensor? lora_up, ScalarType out_dtype) -> Tensor")
_QUANT_ARGS = "(Tensor x, Tensor? smooth, Tensor? lora_down) -> (Tensor, Tensor, Tensor)"
# The 8-bit quantizations can write lowrank_act in 16 bits (lowrank_dtype) for the W4A8 GEMM.
_QUANT8_ARGS = ("(Tensor x, Tensor? smooth, Tensor? lora_down, ScalarType? lowrank_dtype=None) "
                "-> (Tensor, Tensor, Tensor)")
_GELU_CAT_LOWRANK_ARGS = ("(Tensor? x, Tensor gelu_x, Tensor? smooth, Tensor lora_down, "
                          "ScalarType? lowrank_dtype=None) -> (Tensor, Tensor, Tensor)")
_CONV_ARGS = ("(Tensor x, Tensor w, Tensor w_scale, Tensor? bias, Tensor? x_scale, int[2] stride, int[2] padding, "
              "int[2] dilation, Tensor? x2=None, Tensor? x2_scale=None, Tensor? residual=None, "
              "ScalarType? out_dtype=None) -> Tensor")
_GN_QUANT_ARGS = "(Tensor x, int groups, Tensor? weight, Tensor? bias, float eps, bool silu, Tensor? add, Tensor scale) -> Tensor"

SCHEMAS: dict[str, str] = {
    "quantize_act_int8": _QUANT8_ARGS,
    "quantize_act_fp8": _QUANT8_ARGS,
    "quantize_act_int4": _QUANT_ARGS,
    "quantize_act_fp8_lowrank_cat": "(Tensor x, Tensor? smooth, Tensor lora_down, Tensor inv_c) -> (Tensor, Tensor)",
    "quantize_act_fp8_lowrank_cat_from": "(Tensor x, Tensor? smooth, Tensor lowrank, Tensor inv_c) -> (Tensor, Tensor)",
    "quantize_act_int8_gelu_cat": "(Tensor? x, Tensor gelu_x, Tensor? smooth) -> (Tensor, Tensor)",
    "quantize_act_fp8_gelu_cat": "(Tensor? x, Tensor gelu_x, Tensor? smooth) -> (Tensor, Tensor)",
    "quantize_act_int8_gelu_cat_lowrank": _GELU_CAT_LOWRANK_ARGS,
    "quantize_act_fp8_gelu_cat_lowrank": _GELU_CAT_LOWRANK_ARGS,
    "quantize_act_fp8_gelu_cat_lowrank_cat": ("(Tensor? x, Tensor gelu_x, Tensor? smooth, Tensor lora_down, "
                                              "Tensor inv_c) -> (Tensor, Tensor)"),
    "quantize_act_int8_geglu": "(Tensor proj, Tensor? smooth) -> (Tensor, Tensor)",
    "quantize_act_fp8_geglu": "(Tensor proj, Tensor? smooth) -> (Tensor, Tensor)",
    "layer_norm_quant_int8": "(Tensor x, Tensor? weight, Tensor? bias, float eps, Tensor? smooth) -> (Tensor, Tensor)",
    "layer_norm_quant_fp8": "(Tensor x, Tensor? weight, Tensor? bias, float eps, Tensor? smooth) -> (Tensor, Tensor)",
    "w8a8_int8_gemm": "(" + _GEMM_ARGS,
    "w8a8_fp8_gemm": "(" + _GEMM_ARGS,
    "w4a8_gemm": "(" + _GEMM_ARGS,
    "w4a4_gemm": "(" + _GEMM_ARGS,
    "w8a8_int8_conv2d": _CONV_ARGS,
    "w8a8_fp8_conv2d": _CONV_ARGS,
    # Fused non-GEMM ops around the quantized layers (qengine/ops/reference_norms.py).
    "rmsnorm_rope": ("(Tensor x, Tensor weight, Tensor? cos, Tensor? sin, float eps, Tensor? prefix=None, "
                     "Tensor? prefix_weight=None) -> Tensor"),
    "group_norm_nhwc": ("(Tensor x, int groups, Tensor? weight, Tensor? bias, float eps, bool silu=False, "
                        "Tensor? add=None) -> Tensor"),
    "group_norm_quant_int8": _GN_QUANT_ARGS,
    "group_norm_quant_fp8": _GN_QUANT_ARGS,
}

_lib = torch.library.Library("qengine", "DEF")
for _name, _schema in SCHEMAS.items():
    _lib.define(_name + _schema)
    torch.library.impl(f"qengine::{_name}", "CPU", lib=_lib)(getattr(ref, _name))


# The w4a8 weight prepack is a permutation written with device-generic torch ops: one
# implementation serves CPU and CUDA (so these two ops are not in SCHEMAS, whose CUDA kernels
# come from qengine._C).
for _name in ("w4a8_prepack", "w4a8_unprepack"):
    _lib.define(_name + "(Tensor w) -> Tensor")
    for _key in ("CPU", "CUDA"):
        torch.library.impl(f"qengine::{_name}", _key, lib=_lib)(getattr(ref, _name))
    torch.library.register_fake(f"qengine::{_name}", lambda w: torch.empty_like(w), lib=_lib)

# ---------------------------------------------------------------- fakes (shape only)


def _fake_quantize(op, q_dtype):
    def fake(x, smooth=None, lora_down=None, lowrank_dtype=None):
        m, k, r = ref.check_quantize_args(op, x, smooth, lora_down)
        lr_dtype = checks.check_lowrank_dtype(op, lowrank_dtype)
        if q_dtype == torch.uint8:  # packed INT4, group-64 scales
            return (x.new_empty(m, k // 2, dtype=torch.uint8), x.new_empty(m, k // 64, dtype=torch.float32),
                    x.new_empty(m, r, dtype=torch.float32))
        return (x.new_empty(m, k, dtype=q_dtype), x.new_empty(m, dtype=torch.float32),
                x.new_empty(m, r, dtype=lr_dtype))
    return fake


def _fake_gemm(op):
    def fake(a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype):
        m, _, n = ref.check_gemm_args(op, a, a_scale, w, w_scale, bias, lowrank_act, lora_up, out_dtype)
        return a.new_empty(m, n, dtype=out_dtype)
    return fake


def _fake_conv(op, qdtype):
    def fake(x, w, w_scale, bias, x_scale, stride, padding, dilation, x2=None, x2_scale=None, residual=None,
             out_dtype=None):
        b, ho, wo, o, out_dtype = ref.check_conv_args(op, qdtype, x, w, w_scale, bias, x_scale, stride, padding,
                                                      dilation, x2, x2_scale, residual, out_dtype)
        return x.new_empty(b, ho, wo, o, dtype=out_dtype)
    return fake


for _name, _qdtype in (("quantize_act_int8", torch.int8), ("quantize_act_fp8", torch.float8_e4m3fn),
                       ("quantize_act_int4", torch.uint8)):
    torch.library.register_fake(f"qengine::{_name}", _fake_quantize(_name, _qdtype), lib=_lib)


def _fake_quantize_lowrank_cat(op, check):
    def fake(x, smooth, down_or_lowrank, inv_c):
        m, k, r = check(op, x, smooth, down_or_lowrank, inv_c)
        return (x.new_empty(m, k + lowrank_cat_layout(r)[1], dtype=torch.float8_e4m3fn),
                x.new_empty(m, dtype=torch.float32))
    return fake


for _name, _check in (("quantize_act_fp8_lowrank_cat", ref.check_quantize_lowrank_cat_args),
                      ("quantize_act_fp8_lowrank_cat_from", ref.check_quantize_lowrank_cat_from_args)):
    torch.library.register_fake(f"qengine::{_name}", _fake_quantize_lowrank_cat(_name, _check), lib=_lib)
def _fake_quantize_gelu_cat(op, q_dtype):
    def fake(x, gelu_x, smooth=None):
        m, k = ref.check_quantize_gelu_cat_args(op, x, gelu_x, smooth)
        return gelu_x.new_empty(m, k, dtype=q_dtype), gelu_x.new_empty(m, dtype=torch.float32)
    return fake


for _name, _qdtype in (("quantize_act_int8_gelu_cat", torch.int8), ("quantize_act_fp8_gelu_cat", torch.float8_e4m3fn)):
    torch.library.register_fake(f"qengine::{_name}", _fake_quantize_gelu_cat(_name, _qdtype), lib=_lib)


def _fake_quantize_gelu_cat_lowrank(op, q_dtype):
    def fake(x, gelu_x, smooth, lora_down, lowrank_dtype=None):
        m, k, r = ref.check_quantize_gelu_cat_lowrank_args(op, x, gelu_x, smooth, lora_down)
        lr_dtype = checks.check_lowrank_dtype(op, lowrank_dtype)
        return (gelu_x.new_empty(m, k, dtype=q_dtype), gelu_x.new_empty(m, dtype=torch.float32),
                gelu_x.new_empty(m, r, dtype=lr_dtype))
    return fake


for _name, _qdtype in (("quantize_act_int8_gelu_cat_lowrank", torch.int8),
                       ("quantize_act_fp8_gelu_cat_lowrank", torch.float8_e4m3fn)):
    torch.library.register_fake(f"qengine::{_name}", _fake_quantize_gelu_cat_lowrank(_name, _qdtype), lib=_lib)


def _fake_gelu_cat_lowrank_cat(x, gelu_x, smooth, lora_down, inv_c):
    m, k, r = ref.check_quantize_gelu_cat_lowrank_args("quantize_act_fp8_gelu_cat_lowrank_cat", x, gelu_x, smooth,
                                                       lora_down, inv_c)
    return (gelu_x.new_empty(m, k + lowrank_cat_layout(r)[1], dtype=torch.float8_e4m3fn),
            gelu_x.new_empty(m, dtype=torch.float32))


torch.library.register_fake("qengine::quantize_act_fp8_gelu_cat_lowrank_cat", _fake_gelu_cat_lowrank_cat, lib=_lib)


def _fake_quantize_geglu(op, q_dtype):
    def fake(proj, smooth=None):
        m, k = ref.check_quantize_geglu_args(op, proj, smooth)
        return proj.new_empty(m, k, dtype=q_dtype), proj.new_empty(m, dtype=torch.float32)
    return fake


for _name, _qdtype in (("quantize_act_int8_geglu", torch.int8), ("quantize_act_fp8_geglu", torch.float8_e4m3fn)):
    torch.library.register_fake(f"qengine::{_name}", _fake_quantize_geglu(_name, _qdtype), lib=_lib)


def _fake_layer_norm_quant(op, q_dtype):
    def fake(x, weight, bias, eps, smooth=None):
        m, c = ref.check_layer_norm_quant_args(op, x, weight, bias, eps, smooth)
        return x.new_empty(m, c, dtype=q_dtype), x.new_empty(m, dtype=torch.float32)
    return fake


for _name, _qdtype in (("layer_norm_quant_int8", torch.int8), ("layer_norm_quant_fp8", torch.float8_e4m3fn)):
    torch.library.register_fake(f"qengine::{_name}", _fake_layer_norm_quant(_name, _qdtype), lib=_lib)
for _name in ("w8a8_int8_gemm", "w8a8_fp8_gemm", "w4a8_gemm", "w4a4_gemm"):
    torch.library.register_fake(f"qengine::{_name}", _fake_gemm(_name), lib=_lib)
torch.library.register_fake("qengine::w8a8_int8_conv2d", _fake_conv("w8a8_int8_conv2d", torch.int8), lib=_lib)
torch.library.register_fake("qengine::w8a8_fp8_conv2d", _fake_conv("w8a8_fp8_conv2d", torch.float8_e4m3fn),
                            lib=_lib)


def _fake_rmsnorm_rope(x, weight, cos, sin, eps, prefix=None, prefix_weight=None):
    b, s, h, d = ref_norms.check_rmsnorm_rope_args("rmsnorm_rope", x, weight, cos, sin, prefix, prefix_weight,
                                                   layout=False)
    return x.new_empty(b, s, h, d)


def _fake_group_norm_nhwc(x, groups, weight, bias, eps, silu=False, add=None):
    ref_norms.check_group_norm_args("group_norm_nhwc", x, groups, weight, bias, layout=False, add=add)
    return torch.empty_like(x, memory_format=torch.channels_last)


def _fake_group_norm_quant(op, q_dtype):
    def fake(x, groups, weight, bias, eps, silu, add, scale):
        ref_norms.check_group_norm_args(op, x, groups, weight, bias, layout=False, add=add, scale=scale)
        return torch.empty_like(x, dtype=q_dtype, memory_format=torch.channels_last)
    return fake


torch.library.register_fake("qengine::rmsnorm_rope", _fake_rmsnorm_rope, lib=_lib)
torch.library.register_fake("qengine::group_norm_nhwc", _fake_group_norm_nhwc, lib=_lib)
for _name, _qdtype in (("group_norm_quant_int8", torch.int8), ("group_norm_quant_fp8", torch.float8_e4m3fn)):
    torch.library.register_fake(f"qengine::{_name}", _fake_group_norm_quant(_name, _qdtype), lib=_lib)

# ---------------------------------------------------------------- loud CUDA failure


def has_cuda_kernel(name: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"qengine::{name}", "CUDA")


def _no_cuda_kernel(name: str, compiled_archs: str):
    def fail(*args, **kwargs):
        dev = next((a.device for a in args if isinstance(a, torch.Tensor) and a.is_cuda), None)
        arch = "unknown GPU"
        if dev is not None:
            major, minor = torch.cuda.get_device_capability(dev)
            arch = f"sm_{major}{minor} ({torch.cuda.get_device_name(dev)})"
        raise NotImplementedError(
            f"qengine::{name} has no CUDA kernel for {arch} in this build "
            f"(compiled archs: {compiled_archs or 'none; qengine._C was not built'}). "
            "Build qengine with CUDA for this arch, or choose backend='reference' explicitly "
            "to run the slow float32 reference on the GPU."
        )
    return fail


def register_missing_cuda_kernels(compiled_archs: str) -> list[str]:
    """Give every op without a compiled CUDA kernel a CUDA kernel that raises. Returns their names."""
    missing = [name for name in SCHEMAS if not has_cuda_kernel(name)]
    for name in missing:
        torch.library.impl(f"qengine::{name}", "CUDA", lib=_lib)(_no_cuda_kernel(name, compiled_archs))
    return missing
