"""Streamed activation statistics along the sampling trajectory.

One denoiser call is one step of the trajectory (a classifier-free-guidance pipeline batches its
two branches into one call, so this holds there too). A forward pre-hook on the denoiser counts
the calls; a pre-hook on every layer to be quantized folds its input into:

- ``absmax [K]``: per-input-channel absmax over all steps (what smoothing needs);
- ``step_absmax [S, K]``: the same per step (timestep-aware ranges; S grows by one row a step);
- a uniform reservoir of input rows (Linear: tokens ``[R, K]``; Conv2d: whole maps
  ``[R, C, H, W]``): the layer's inputs for the output-error searches. Its size is fixed, so
  memory does not grow with steps or samples, and every step is represented in proportion.

With ``hessian=True`` each observer also accumulates ``H = sum x x^T`` over EVERY input row it sees
(Linear: tokens; Conv2d: the im2col patches in the weight's (kh, kw, C) column order) on the
layer's device: GPTQ's second moment from the whole trajectory, O(K^2) memory per layer.

The denoiser's own call arguments are kept in a small reservoir too ("probes"): replaying them
measures how much each quantized layer moves the model output (sensitivity).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class Reservoir:
    """Uniform sample of at most ``capacity`` items from a stream of batches (Vitter's algorithm R)."""

    def __init__(self, capacity: int, generator: torch.Generator):
        self.capacity = capacity
        self.seen = 0
        self.data: torch.Tensor | None = None
        self.gen = generator

    def add(self, batch: torch.Tensor) -> None:
        batch = batch.detach().float().cpu()
        n = len(batch)
        if self.data is None:
            self.data = batch.new_empty((self.capacity, *batch.shape[1:]))
        fill = max(0, min(n, self.capacity - self.seen))
        if fill:
            self.data[self.seen:self.seen + fill] = batch[:fill]
        if fill < n:
            # Item i of the stream (0-based) replaces a random slot with probability capacity / (i + 1).
            idx = torch.arange(self.seen + fill, self.seen + n)
            slot = (torch.rand(n - fill, generator=self.gen) * (idx + 1)).long()
            keep = slot < self.capacity
            self.data[slot[keep]] = batch[fill:][keep]
        self.seen += n

    def get(self) -> torch.Tensor:
        return self.data[:min(self.seen, self.capacity)]


class HessianAccumulator:
    """``sum x x^T`` over every row of the inputs (float32 on the layer's device: many calibrations may
    share one GPU, and a float32 sum of ~1e6 rows is far more precise than the 8-bit grids it serves)."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.h: torch.Tensor | None = None
        self.rows = 0

    def add(self, x: torch.Tensor) -> None:
        m = self.module
        if isinstance(m, nn.Conv2d):
            # Chunks of images: an unfolded batch is kh*kw times the maps.
            for xb in x.split(max(1, 2 ** 26 // max(1, x[0].numel() * m.kernel_size[0] * m.kernel_size[1]))):
                cols = torch.nn.functional.unfold(xb.float(), m.kernel_size, m.dilation, m.padding, m.stride)
                b, _, l = cols.shape
                # unfold's rows are (C, kh, kw); the quantized conv's weight columns are (kh, kw, C).
                cols = cols.reshape(b, m.in_channels, -1, l).permute(0, 3, 2, 1).reshape(b * l, -1)
                self._fold(cols)
        else:
            self._fold(x.reshape(-1, x.shape[-1]).float())

    def _fold(self, rows: torch.Tensor) -> None:
        g = rows.t() @ rows
        self.h = g if self.h is None else self.h.add_(g)
        self.rows += len(rows)

    def get(self) -> torch.Tensor:
        """The mean second moment ``H / rows`` (float64, on the layer's device)."""
        return self.h.double() / max(self.rows, 1)


class LayerObserver:
    def __init__(self, name: str, module: nn.Module, capacity: int, gen: torch.Generator, tracker: StepTracker,
                 hessian: bool = False):
        self.name = name
        self.is_conv = isinstance(module, nn.Conv2d)
        self.hessian = HessianAccumulator(module) if hessian else None
        self.absmax: torch.Tensor | None = None
        self.step_absmax: dict[int, torch.Tensor] = {}
        self.reservoir = Reservoir(capacity, gen)
        self.tracker = tracker

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        if self.hessian is not None:
            self.hessian.add(x)
        if self.is_conv:
            chan = x.abs().amax(dim=(0, 2, 3)).float().cpu()
            self.reservoir.add(x)
        else:
            rows = x.reshape(-1, x.shape[-1])
            chan = rows.abs().amax(dim=0).float().cpu()
            self.reservoir.add(rows)
        self.absmax = chan if self.absmax is None else torch.maximum(self.absmax, chan)
        step = self.tracker.step
        prev = self.step_absmax.get(step)
        self.step_absmax[step] = chan if prev is None else torch.maximum(prev, chan)

    def step_ranges(self) -> torch.Tensor:
        """Per-step, per-channel absmax ``[S, K]`` in step order."""
        return torch.stack([self.step_absmax[s] for s in sorted(self.step_absmax)])


class StepTracker:
    """Counts denoiser calls (= trajectory steps, modulo the number of trajectories) and keeps probes."""

    def __init__(self, steps_per_trajectory: int | None, probe_capacity: int, gen: torch.Generator):
        self.calls = 0
        self.steps_per_trajectory = steps_per_trajectory
        self.probes: list[tuple[tuple, dict]] = []
        self.probe_capacity = probe_capacity
        self.gen = gen

    @property
    def step(self) -> int:
        c = self.calls - 1
        return c % self.steps_per_trajectory if self.steps_per_trajectory else c

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.calls += 1
        probe = (_detach(args), _detach(kwargs))
        if len(self.probes) < self.probe_capacity:
            self.probes.append(probe)
        else:
            slot = int(torch.randint(0, self.calls, (1,), generator=self.gen))
            if slot < self.probe_capacity:
                self.probes[slot] = probe


def _detach(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_detach(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _detach(v) for k, v in obj.items()}
    return obj


def collect(model: nn.Module, names: list[str], run_pipeline: Callable[[], Any], *, rows: int = 2048,
            maps: int = 64, probes: int = 8, steps_per_trajectory: int | None = None,
            seed: int = 0, hessian: bool = False) -> tuple[dict[str, LayerObserver], StepTracker]:
    """Run ``run_pipeline()`` (the full-precision pipeline, end to end) once with observers attached."""
    gen = torch.Generator().manual_seed(seed)
    tracker = StepTracker(steps_per_trajectory, probes, gen)
    observers: dict[str, LayerObserver] = {}
    handles = [model.register_forward_pre_hook(tracker, with_kwargs=True)]
    try:
        for name in names:
            mod = model.get_submodule(name)
            obs = LayerObserver(name, mod, maps if isinstance(mod, nn.Conv2d) else rows, gen, tracker, hessian)
            observers[name] = obs
            handles.append(mod.register_forward_pre_hook(obs))
        with torch.no_grad():
            run_pipeline()
    finally:
        for h in handles:
            h.remove()
    missing = [n for n, o in observers.items() if o.absmax is None]
    if missing:
        raise RuntimeError(f"the pipeline never called {len(missing)} layer(s) to be quantized, e.g. {missing[0]!r}; "
                           "run_pipeline must run the model whose layers are calibrated")
    return observers, tracker


def skip_concat_splits(model: nn.Module) -> dict[str, int]:
    """Layers of a diffusers UNet whose input is ``cat([hidden, skip])``, and the channel where the skip half starts.

    In every up block, resnet i takes the up path's hidden states concatenated with a skip
    connection popped from the down path; both its ``conv1`` (after GroupNorm + SiLU, which
    keep the channel order) and its 1x1 ``conv_shortcut`` (on the raw concatenation) see two
    halves with unrelated ranges (Q-Diffusion's "split shortcut").
    """
    up_blocks = getattr(model, "up_blocks", None)
    if up_blocks is None:
        return {}
    splits: dict[str, int] = {}
    for b, block in enumerate(up_blocks):
        for i, res in enumerate(getattr(block, "resnets", ())):
            cin = res.conv1.in_channels
            # The up path keeps the block's width after its first resnet; the first resnet takes
            # the previous block's width. The skip half is what remains.
            prev = res.conv1.out_channels if i else _block_input_channels(up_blocks, b, model)
            skip = cin - prev
            if 0 < skip < cin:
                for sub in ("conv1", "conv_shortcut"):
                    if isinstance(getattr(res, sub, None), nn.Conv2d):
                        splits[f"up_blocks.{b}.resnets.{i}.{sub}"] = prev
    return splits


def _block_input_channels(up_blocks: nn.ModuleList, b: int, model: nn.Module) -> int:
    if b == 0:
        mid = getattr(model, "mid_block", None)
        if mid is not None and getattr(mid, "resnets", None):
            return mid.resnets[-1].conv2.out_channels
        return up_blocks[0].resnets[0].conv1.out_channels
    return up_blocks[b - 1].resnets[-1].conv2.out_channels
