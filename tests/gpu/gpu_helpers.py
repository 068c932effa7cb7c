"""Pieces every GPU kernel test module shares: the module-level skip (no GPU, or qengine._C not
built), the SQNR measure and the NaN-poisoned allocator. Importable on a CPU-only machine."""
from __future__ import annotations

import math

import pytest
import torch


def require_extension():
    """Skip the calling test module, with the reason, unless a CUDA GPU and a built qengine._C are
    there; returns the qengine._C module."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU", allow_module_level=True)
    from qengine import _extension

    ext = _extension.load_extension()
    if ext is None:
        pytest.skip("qengine._C is not built (QENGINE_BUILD_CUDA=1 pip install --no-build-isolation .)",
                    allow_module_level=True)
    return ext


def sqnr_db(out: torch.Tensor, expect: torch.Tensor) -> float:
    err = (out.double() - expect.double()).pow(2).sum().item()
    sig = expect.double().pow(2).sum().item()
    return math.inf if err == 0 else 10 * math.log10(sig / err)


def poison_allocator(nbytes: int, device: torch.device | str = "cuda") -> None:
    """Fill freed caching-allocator memory with NaN so an output the kernel fails to write shows."""
    t = torch.full((max(nbytes // 2, 1) + 4096,), float("nan"), dtype=torch.bfloat16, device=device)
    del t
