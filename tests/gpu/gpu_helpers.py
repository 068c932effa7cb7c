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


def capture_graph(fn, static_x: torch.Tensor, warmup: int = 2):
    """``fn(static_x)`` captured in a CUDA graph after ``warmup`` calls on a side stream (lazy
    state such as cuBLAS handles must exist before capture). Returns ``(graph, static_output)``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn(static_x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = fn(static_x)
    return graph, static_y


def assert_replays_equal_eager(fn, static_x: torch.Tensor, make_x, seeds=range(3)) -> None:
    """Capture ``fn(static_x)``, then for each seed copy ``make_x(seed)`` into the captured input,
    replay, and require the graph's output to equal an eager call on the same input bit for bit."""
    graph, static_y = capture_graph(fn, static_x)
    for seed in seeds:
        new_x = make_x(seed)
        static_x.copy_(new_x)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_y, fn(new_x)), f"replay {seed} differs from eager"


def outlier_activations(m: int, k: int, dtype: torch.dtype = torch.bfloat16, seed: int = 0, device: str = "cuda",
                        decades: int = 2) -> torch.Tensor:
    """Activations that stress a per-token quantizer: row magnitudes over 10^-decades..10^decades,
    every (k // 7)-th channel 20x (outlier channels), and an all-zero row 1 (the scale-1 path)."""
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn(m, k, device=device, generator=g)
    x = x * torch.logspace(-decades, decades, m, device=device)[torch.randperm(m, device=device, generator=g)][:, None]
    x[:, :: max(k // 7, 1)] *= 20
    if m > 2:
        x[1] = 0
    return x.to(dtype)


def sdxl_style_unet(device: str = "cuda"):
    """A small UNet2DConditionModel with SDXL's transformer blocks (640 channels, two layers per
    attention, linear projections, GEGLU feed-forwards), bf16, deterministic weights; and its
    inputs (sample, timestep, text). Needs diffusers (the caller skips without it)."""
    import diffusers

    torch.manual_seed(0)
    model = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(320, 640), layers_per_block=1,
        cross_attention_dim=64, attention_head_dim=10, transformer_layers_per_block=2,
        use_linear_projection=True).to(device, torch.bfloat16).eval()
    gen = torch.Generator(device=device).manual_seed(1)
    sample = torch.randn(1, 4, 16, 16, device=device, generator=gen).bfloat16()
    text = torch.randn(1, 7, 64, device=device, generator=gen).bfloat16()
    return model, (sample, torch.tensor([500.0], device=device), text)
