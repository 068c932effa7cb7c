"""Argument checks shared by the reference kernels and the typed wrappers.

They look only at metadata (shape, dtype, device), never at values, so they are free under
torch.compile and CUDA-graph capture. Each error names the op, the argument and what was
expected. The C++ bindings repeat the same checks with TORCH_CHECK.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_ACT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
OUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class OpInputError(ValueError):
    """Bad arguments to a qengine op."""


def _fail(op: str, msg: str) -> None:
    raise OpInputError(f"qengine::{op}: {msg}")


def check_tensor(op: str, name: str, t: torch.Tensor, *, dtypes: Sequence[torch.dtype],
                 shape: Sequence[int | None], device: torch.device | None = None, contiguous: bool = True) -> None:
    """``shape`` entries of None match any size. ``contiguous=False`` skips the layout check (fakes
    under torch.compile with symbolic sizes, where it cannot be decided; the kernels check it)."""
    if not isinstance(t, torch.Tensor):
        _fail(op, f"{name} must be a tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        _fail(op, f"{name} must have dtype {' or '.join(str(d) for d in dtypes)}, got {t.dtype}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        _fail(op, f"{name} must have shape {want}, got {list(t.shape)}")
    if device is not None and t.device != device:
        _fail(op, f"{name} is on {t.device} but the other operands are on {device}")
    if contiguous and not t.is_contiguous():
        _fail(op, f"{name} must be contiguous (strides {t.stride()} for shape {list(t.shape)})")


def check_k(op: str, k: int, multiple: int) -> None:
    if k <= 0 or k % multiple:
        _fail(op, f"K={k} is not supported: K must be a positive multiple of {multiple}")


def check_out_dtype(op: str, out_dtype: torch.dtype) -> None:
    if out_dtype not in OUT_DTYPES:
        _fail(op, f"out_dtype must be one of {', '.join(map(str, OUT_DTYPES))}, got {out_dtype}")


def check_lowrank(op: str, m: int, n: int, lowrank_act: torch.Tensor | None,
                  lora_up: torch.Tensor | None, device: torch.device,
                  act_dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> None:
    if (lowrank_act is None) != (lora_up is None):
        _fail(op, "lowrank_act and lora_up must be given together")
    if lowrank_act is None:
        return
    check_tensor(op, "lowrank_act", lowrank_act, dtypes=act_dtypes, shape=(m, None), device=device)
    check_tensor(op, "lora_up", lora_up, dtypes=FLOAT_ACT_DTYPES, shape=(n, lowrank_act.shape[1]), device=device)


def check_lowrank_dtype(op: str, lowrank_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype a quantize op writes lowrank_act in: float32 (the default) or a 16-bit float."""
    if lowrank_dtype is None:
        return torch.float32
    if lowrank_dtype not in FLOAT_ACT_DTYPES:
        _fail(op, f"lowrank_dtype must be torch.float32, torch.bfloat16 or torch.float16, got {lowrank_dtype}")
    return lowrank_dtype


def check_bias(op: str, n: int, bias: torch.Tensor | None, device: torch.device) -> None:
    if bias is not None:
        check_tensor(op, "bias", bias, dtypes=FLOAT_ACT_DTYPES, shape=(n,), device=device)


def check_smooth_and_down(op: str, k: int, smooth: torch.Tensor | None, lora_down: torch.Tensor | None,
                          device: torch.device) -> None:
    if smooth is not None:
        check_tensor(op, "smooth", smooth, dtypes=FLOAT_ACT_DTYPES, shape=(k,), device=device)
    if lora_down is not None:
        check_tensor(op, "lora_down", lora_down, dtypes=FLOAT_ACT_DTYPES, shape=(None, k), device=device)


def check_conv_params(op: str, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int]) -> None:
    for name, vals, lo in (("stride", stride, 1), ("padding", padding, 0), ("dilation", dilation, 1)):
        if len(vals) != 2 or any(v < lo for v in vals):
            _fail(op, f"{name} must be two integers >= {lo}, got {list(vals)}")
