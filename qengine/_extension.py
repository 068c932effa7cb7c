"""Finds the compiled CUDA extension ``qengine._C`` and reports which backend is in use."""
from __future__ import annotations

import functools
import importlib

import torch


@functools.lru_cache(maxsize=None)
def load_extension():
    """The ``qengine._C`` module, or None where it was not built (CPU-only installs)."""
    try:
        return importlib.import_module("qengine._C")
    except ImportError:
        return None


def build_info() -> dict:
    """What the installed ``qengine._C`` holds (archs, CUDA and CUTLASS versions, ops); {} if not built."""
    ext = load_extension()
    return {} if ext is None else dict(ext.build_info())


def compiled_archs() -> list[str]:
    """GPU archs the installed ``qengine._C`` holds kernels for (e.g. ``['sm_80', 'sm_90a']``)."""
    return list(build_info().get("archs", []))


def backend_description(device: torch.device | str | None = None) -> str:
    """One line saying what computes qengine ops on ``device`` (default: the current GPU, else CPU)."""
    if device is None:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cpu":
        return "reference (pure-PyTorch float32 on CPU)"
    if device.type != "cuda":
        return f"none: qengine has no kernels for device type {device.type!r}"
    major, minor = torch.cuda.get_device_capability(device)
    archs = compiled_archs()
    if not archs:
        return f"none for sm_{major}{minor}: qengine._C is not built (use backend='reference' explicitly)"
    # sm_90a kernels only run on 9.0 exactly; plain sm_XY code runs on the same major with minor >= Y.
    usable = [a for a in archs if _runs_on(a, major, minor)]
    if not usable:
        return f"none for sm_{major}{minor}: qengine._C was built for {', '.join(archs)}"
    return f"CUDA kernels ({', '.join(usable)}) on sm_{major}{minor}"


def _runs_on(arch: str, major: int, minor: int) -> bool:
    digits = arch.removeprefix("sm_").rstrip("a")
    a_major, a_minor = int(digits[:-1]), int(digits[-1])
    if arch.endswith("a"):
        return (a_major, a_minor) == (major, minor)
    return a_major == major and a_minor <= minor
