"""Replay a denoiser's forward as one CUDA graph: no host cost per kernel.

At batch 1 an eager SDXL UNet step keeps the GPU busy ~27 ms out of ~70 ms; the rest is Python and
kernel launches (notes/h100_2026-11-22b/README.md). A captured graph replays every kernel of the
step with one launch. qengine's CUDA ops pass capture/replay tests (tests/gpu/test_*_kernels.py),
so a quantized model can be captured as it is (tests/gpu/test_cuda_graph_module.py)::

    step = qengine.CUDAGraphModule(unet)            # wraps; the module itself is unchanged
    out = step(sample, t, encoder_hidden_states=emb, return_dict=False)   # as unet(...) would
    step.config                                      # other attributes are the wrapped module's

One graph per input signature: the pytree structure of the arguments, every tensor's shape,
dtype, device and strides, and the value of every non-tensor argument. The first call with a
new signature warms the module up on a side stream and captures it; later calls copy the new
tensor values into the captured inputs and replay. Rules of the road:

- The module must not synchronise with the host inside forward (``.item()``, ``.cpu()``, data-
  dependent Python branches): capture fails with a CUDA error, which is re-raised naming this.
  qengine's temporal feature cache looks timesteps up on the host, so it is not capturable.
- Parameters may change in place (same storage); reassigning them needs a new wrapper.
- The output is cloned by default, because the next replay overwrites the graph's output
  tensors; pass ``clone_output=False`` to get those tensors themselves (no copy).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils import _pytree as pytree


class CUDAGraphError(RuntimeError):
    """A forward that cannot be captured, or a CUDA graph asked for without CUDA."""


def _leaf_key(leaf):
    if isinstance(leaf, torch.Tensor):
        return ("T", tuple(leaf.shape), leaf.dtype, str(leaf.device), tuple(leaf.stride()))
    try:
        hash(leaf)
        return ("V", type(leaf).__name__, leaf)
    except TypeError:
        return ("R", type(leaf).__name__, repr(leaf))


class _Entry:
    def __init__(self, graph: torch.cuda.CUDAGraph, static_leaves: list, output):
        self.graph = graph
        self.static_leaves = static_leaves
        self.output = output


class CUDAGraphModule(nn.Module):
    """Wrap ``module`` so that each call replays a CUDA graph captured for its input signature."""

    def __init__(self, module: nn.Module, *, warmup: int = 2, clone_output: bool = True):
        super().__init__()
        if not torch.cuda.is_available():
            raise CUDAGraphError("CUDAGraphModule needs a CUDA GPU (torch.cuda.is_available() is False)")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1 (lazy initialisation must happen before capture), got {warmup}")
        self.module = module
        self.warmup = warmup
        self.clone_output = clone_output
        self._graphs: dict = {}
        self._pool = None

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            wrapped = self.__dict__.get("_modules", {}).get("module")
            if wrapped is None:
                raise
            return getattr(wrapped, name)

    @property
    def num_graphs(self) -> int:
        """How many input signatures have been captured."""
        return len(self._graphs)

    def reset(self) -> None:
        """Drop every captured graph (and the memory its pool holds)."""
        self._graphs.clear()
        self._pool = None

    def forward(self, *args, **kwargs):
        leaves, spec = pytree.tree_flatten((args, kwargs))
        tensors = [x for x in leaves if isinstance(x, torch.Tensor)]
        if not tensors or any(not t.is_cuda for t in tensors):
            devices = sorted({str(t.device) for t in tensors}) or ["no tensor arguments"]
            raise CUDAGraphError(f"CUDAGraphModule: every tensor argument must be on a CUDA device, got {devices}")
        key = (str(spec), tuple(_leaf_key(x) for x in leaves))
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(leaves, spec)
            self._graphs[key] = entry
        else:
            for static, new in zip(entry.static_leaves, leaves):
                if isinstance(static, torch.Tensor):
                    static.copy_(new)
        entry.graph.replay()
        if not self.clone_output:
            return entry.output
        return pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, entry.output)

    def _capture(self, leaves: list, spec) -> _Entry:
        # Static inputs live as long as the graph: the replay reads their memory.
        static = [x.clone() if isinstance(x, torch.Tensor) else x for x in leaves]
        args, kwargs = pytree.tree_unflatten(static, spec)
        device = next(x.device for x in static if isinstance(x, torch.Tensor))
        with torch.cuda.device(device):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side), torch.no_grad():
                for _ in range(self.warmup):  # lazy state (cuBLAS handles, autotuning) before capture
                    self.module(*args, **kwargs)
            torch.cuda.current_stream().wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, pool=self._pool), torch.no_grad():
                    output = self.module(*args, **kwargs)
            except RuntimeError as e:
                raise CUDAGraphError(
                    f"CUDAGraphModule: capturing {type(self.module).__name__}.forward failed: {e}. The forward "
                    "must not synchronise with the host (.item(), .cpu(), printing tensors, data-dependent "
                    "branches); qengine's temporal cache does, so capture a model without it.") from e
        return _Entry(graph, static, output)
