"""Temporal feature cache: compute a denoiser's timestep path once per sampling run, serve it per step.

In every supported denoiser the timestep path (the time/guidance/pooled-text/class embedding and
every projection of it into a block: UNet resnets' ``time_emb_proj``, DiT-style adaLN modulation)
depends only on the step and the conditioning, never on the image. The cache

1. wraps the *real* modules of that path (``module.forward`` is replaced by a dispatcher; nothing of
   the model's own forward code is patched): the embedders with weights (roots) and the
   projections (consumers);
2. on the first denoiser call it meets with a new conditioning, computes those modules for ALL of
   the scheduler's timesteps in one batched pass (rows ordered step-major: ``S * R`` rows for S
   steps of R batch rows), calling the model's own embedder modules and helper methods; only the
   small glue between them (``emb + class_emb``, ``silu``, the FLUX ``* 1000``) is restated here,
   per architecture, and checked against the live forward on the first call (``verify``);
3. inside every later denoiser call returns the cached rows of the current step from each
   wrapped module's forward (the step is looked up by the value of the call's ``timestep``);
4. with ``offload=True`` moves those modules' weights to CPU after the first call (the modules
   keep empty placeholders on their device, so ``model.device``/``model.dtype`` stay right); a
   later precompute streams them back one module at a time; ``disable()`` restores them.

What is cached per architecture, the exactness measurements and the limits: notes/temporal_cache.md.

Conditioning (class labels, pooled text, guidance, SDXL text_embeds/time_ids, LCM timestep_cond)
is matched per call (same tensor object and version: no sync; else by value): a conditioning
not seen before gets its own entry, precomputed for all steps; the ``max_entries`` most recently
used entries are kept (2 by default: FLUX true-CFG alternates two conditionings per step).
The timesteps are those of the bound scheduler (read at the first call) or the ones given; if
the scheduler's timesteps change afterwards, or a call's timestep is not among them, the call
raises :class:`TemporalCacheError` (call ``cache.reset()`` or enable again).
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .diffusers import find_denoiser

__all__ = ["TemporalCache", "TemporalCacheError", "enable_temporal_cache", "temporal_module_names"]


class TemporalCacheError(RuntimeError):
    """The temporal cache cannot serve a call (timesteps changed, unsupported model or input)."""


# ----------------------------------------------------------------------------- architectures
# Each recipe: which modules to wrap, how the scheduler's timestep becomes the model's
# ``timestep`` argument, and the batched computation of the timestep path. Wrapped modules record
# their own outputs while the recipe runs, so a recipe only has to call them in the model's way.

def _cls(m: nn.Module) -> str:
    return type(m).__name__


class _Recipe:
    sample_arg = "hidden_states"
    cond_args: tuple[str, ...] = ()

    def modules(self, model: nn.Module) -> tuple[list[str], list[str]]:
        """(roots, consumers): fully-qualified names of the modules to wrap."""
        raise NotImplementedError

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The model's ``timestep`` argument for scheduler timesteps ``t`` (already in the call's
        dtype and device)."""
        return t

    def run(self, model: nn.Module, ts: torch.Tensor, cond: dict[str, Any], like: torch.Tensor) -> None:
        """Call the wrapped modules on ``ts`` (model-argument timesteps, one per row) and the
        row-aligned conditioning ``cond``; ``like`` is an empty tensor with the row count, dtype
        and device of the call's sample."""
        raise NotImplementedError


def _resnet_consumers(model: nn.Module) -> list[str]:
    names = []
    for name, m in model.named_modules():
        other_resnet = getattr(m, "time_emb_proj", None) is not None and _cls(m) != "ResnetBlock2D"
        if _cls(m) == "AdaGroupNorm" or other_resnet:
            raise TemporalCacheError(f"{name} ({_cls(m)}) takes the time embedding in a way the temporal "
                                     f"cache does not handle (only ResnetBlock2D.time_emb_proj)")
        if _cls(m) == "ResnetBlock2D" and m.time_emb_proj is not None:
            names.append(f"{name}.time_emb_proj")
    return names


def _resnet_projections(model: nn.Module, emb: torch.Tensor) -> None:
    for name in _resnet_consumers(model):
        resnet = model.get_submodule(name.rpartition(".")[0])
        resnet.time_emb_proj(emb if resnet.skip_time_act else resnet.nonlinearity(emb))


class _UNet2DCondition(_Recipe):
    sample_arg = "sample"
    cond_args = ("class_labels", "timestep_cond", "added_cond_kwargs.text_embeds", "added_cond_kwargs.time_ids")

    def modules(self, model):
        add = model.config.addition_embed_type
        if add not in (None, "text_time"):
            raise TemporalCacheError(f"addition_embed_type={add!r} is not supported by the temporal cache "
                                     f"(supported: None, 'text_time')")
        roots = ["time_embedding"]
        roots += ["class_embedding"] if model.class_embedding is not None else []
        roots += ["add_embedding"] if add == "text_time" else []
        return roots, _resnet_consumers(model)

    def run(self, model, ts, cond, like):
        # UNet2DConditionModel.forward, the part before conv_in, on the model's own helpers.
        emb = model.time_embedding(model.get_time_embed(sample=like, timestep=ts), cond["timestep_cond"])
        class_emb = model.get_class_embed(sample=like, class_labels=cond["class_labels"])
        if class_emb is not None:
            emb = torch.cat([emb, class_emb], dim=-1) if model.config.class_embeddings_concat else emb + class_emb
        added = None
        if model.config.addition_embed_type == "text_time":
            added = {"text_embeds": cond["added_cond_kwargs.text_embeds"],
                     "time_ids": cond["added_cond_kwargs.time_ids"]}
        aug = model.get_aug_embed(emb=emb, encoder_hidden_states=None, added_cond_kwargs=added)
        emb = emb + aug if aug is not None else emb
        if model.time_embed_act is not None:
            emb = model.time_embed_act(emb)
        _resnet_projections(model, emb)


class _UNet2D(_Recipe):
    sample_arg = "sample"
    cond_args = ("class_labels",)

    def modules(self, model):
        roots = ["time_embedding"] + (["class_embedding"] if model.class_embedding is not None else [])
        return roots, _resnet_consumers(model)

    def run(self, model, ts, cond, like):
        # UNet2DModel.forward, the part before conv_in.
        emb = model.time_embedding(model.time_proj(ts).to(dtype=model.dtype))
        if model.class_embedding is not None:
            labels = cond["class_labels"]
            if model.config.class_embed_type == "timestep":
                labels = model.time_proj(labels)
            emb = emb + model.class_embedding(labels).to(dtype=model.dtype)
        _resnet_projections(model, emb)


# adaLN modules that project the shared ``temb`` with ``self.linear(self.silu(temb))``; the
# continuous one casts to the hidden dtype in between.
_ADALN = ("AdaLayerNormZero", "AdaLayerNormZeroSingle", "SD35AdaLayerNormZeroX", "AdaLayerNormContinuous")


class _SharedTemb(_Recipe):
    """FLUX and SD3: one ``time_text_embed`` output, projected by every adaLN ``.linear``."""

    def modules(self, model):
        consumers = []
        for name, m in model.named_modules():
            if _cls(m) in _ADALN and getattr(m, "emb", None) is None:
                consumers.append(f"{name}.linear")
            elif "AdaLayerNorm" in _cls(m) or _cls(m) == "AdaGroupNorm":
                raise TemporalCacheError(f"{name} ({_cls(m)}) is not supported by the temporal cache")
        return ["time_text_embed"], consumers

    def temb(self, model, ts, cond, like):
        return model.time_text_embed(ts, cond["pooled_projections"])

    def run(self, model, ts, cond, like):
        temb = self.temb(model, ts, cond, like)
        for name in self.modules(model)[1]:
            norm = model.get_submodule(name.rpartition(".")[0])
            x = norm.silu(temb)
            norm.linear(x.to(like.dtype) if _cls(norm) == "AdaLayerNormContinuous" else x)


class _Flux(_SharedTemb):
    cond_args = ("pooled_projections", "guidance")

    def model_timesteps(self, t):
        return t / 1000  # FLUX pipelines pass timestep / 1000 (in the latents' dtype)

    def temb(self, model, ts, cond, like):
        # FluxTransformer2DModel.forward: timestep and guidance go back to 0..1000 in the hidden dtype.
        ts = ts.to(like.dtype) * 1000
        pooled, guidance = cond["pooled_projections"], cond["guidance"]
        if guidance is None:
            return model.time_text_embed(ts, pooled)
        return model.time_text_embed(ts, guidance.to(like.dtype) * 1000, pooled)


class _SD3(_SharedTemb):
    cond_args = ("pooled_projections",)


class _DiT(_Recipe):
    cond_args = ("class_labels",)

    def modules(self, model):
        if model.config.norm_type != "ada_norm_zero":
            raise TemporalCacheError(f"DiT norm_type={model.config.norm_type!r} is not supported")
        n = len(model.transformer_blocks)
        roots = [f"transformer_blocks.{i}.norm1.emb" for i in range(n)]
        return roots, [f"transformer_blocks.{i}.norm1.linear" for i in range(n)] + ["proj_out_1"]

    def run(self, model, ts, cond, like):
        for i, block in enumerate(model.transformer_blocks):
            emb = block.norm1.emb(ts, cond["class_labels"], hidden_dtype=like.dtype)
            block.norm1.linear(block.norm1.silu(emb))
            if i == 0:  # DiTTransformer2DModel.forward reuses block 0's embedder for the final adaLN
                model.proj_out_1(F.silu(emb))


_RECIPES: dict[str, Callable[[], _Recipe]] = {
    "UNet2DConditionModel": _UNet2DCondition,
    "UNet2DModel": _UNet2D,
    "FluxTransformer2DModel": _Flux,
    "SD3Transformer2DModel": _SD3,
    "DiTTransformer2DModel": _DiT,
}


# ----------------------------------------------------------------------------- the cache

class _Entry:
    """Cached outputs of every wrapped module for one conditioning: name -> (S, R, ...)."""

    def __init__(self, key: tuple, cond: dict[str, Any], step_of: dict[float, int]):
        self.key, self.step_of = key, step_of
        self.tables: dict[str, torch.Tensor] = {}
        # name -> (weakref to the tensor last matched, its _version, a private copy of the values)
        self.cond = {k: None if v is None else (weakref.ref(v), v._version, v.detach().clone())
                     for k, v in cond.items()}

    def matches(self, cond: dict[str, Any]) -> bool:
        for k, v in cond.items():
            mine = self.cond[k]
            if v is None or mine is None:
                if (v is None) != (mine is None):
                    return False
                continue
            ref, version, values = mine
            if ref() is v and v._version == version:
                continue
            if v.shape != values.shape or v.dtype != values.dtype:
                return False
            if not torch.equal(v.detach().to(values.device), values):
                return False
            self.cond[k] = (weakref.ref(v), v._version, values)
        return True


class _Offloaded:
    """The weights of one wrapped module, held on CPU while the module keeps empty placeholders:
    no storage, but the device and dtype (``model.device`` reads them; ``model.to()`` moves them)."""

    def __init__(self, module: nn.Module):
        self.slots = []  # (owner, attr, is_param, cpu tensor, requires_grad)
        placeholders = []
        for owner in module.modules():
            for table, is_param in ((owner._parameters, True), (owner._buffers, False)):
                for attr, t in table.items():
                    if t is not None:
                        cpu = t.detach() if t.device.type == "cpu" else _to_cpu(t.detach())
                        self.slots.append((owner, attr, is_param, cpu, t.requires_grad))
                        ph = torch.empty(0, dtype=t.dtype, device=t.device)
                        placeholders.append(nn.Parameter(ph, requires_grad=False) if is_param else ph)
        self.placeholders = placeholders
        self.empty()

    def _current(self) -> list[torch.Tensor]:
        return [(o._parameters if p else o._buffers)[a] for o, a, p, _, _ in self.slots]

    @staticmethod
    def _set(owner: nn.Module, attr: str, is_param: bool, t: torch.Tensor) -> None:
        (owner._parameters if is_param else owner._buffers)[attr] = t

    def empty(self) -> None:
        for (owner, attr, is_param, _, _), ph in zip(self.slots, self.placeholders):
            self._set(owner, attr, is_param, ph)

    def load(self, device: torch.device) -> None:
        self.placeholders = self._current()
        for (owner, attr, is_param, cpu, _), ph in zip(self.slots, self.placeholders):
            t = cpu.to(device, ph.dtype, non_blocking=True)
            self._set(owner, attr, is_param, nn.Parameter(t, requires_grad=False) if is_param else t)

    def restore(self) -> None:
        for (owner, attr, is_param, cpu, grad), ph in zip(self.slots, self._current()):
            t = cpu.to(ph.device, ph.dtype)
            self._set(owner, attr, is_param, nn.Parameter(t, requires_grad=grad) if is_param else t)


def _to_cpu(t: torch.Tensor) -> torch.Tensor:
    out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=torch.cuda.is_available())
    return out.copy_(t)


def _rows(x: torch.Tensor, rows: int, what: str) -> torch.Tensor:
    if x.dim() == 0 or x.shape[0] not in (1, rows):
        raise TemporalCacheError(f"{what} has shape {tuple(x.shape)}; the temporal cache needs one row per "
                                 f"batch row ({rows}) or a single row")
    return x.expand(rows, *x.shape[1:])


class TemporalCache:
    """The temporal cache enabled on one denoiser; see :func:`enable_temporal_cache`.

    ``stats``: ``precomputes`` (batched passes run), ``served`` (denoiser calls served).
    Usable as a context manager (``disable()`` on exit).
    """

    def __init__(self, model: nn.Module, scheduler=None, timesteps=None, offload: bool = False,
                 max_entries: int = 2, verify: bool = True, exact: bool = False):
        self.names = temporal_module_names(model)
        if getattr(model, "_qengine_temporal_cache", None) is not None:
            raise TemporalCacheError("a temporal cache is already enabled on this model; disable() it first")
        if scheduler is None and timesteps is None:
            raise TypeError("enable_temporal_cache needs the scheduler that drives the sampling loop (or the "
                            "pipeline, whose scheduler is used), or explicit timesteps=")
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.model, self.recipe = model, _RECIPES[_cls(model)]()
        self.scheduler = scheduler
        self.fixed_timesteps = None if timesteps is None else torch.as_tensor(timesteps).detach().cpu().clone()
        self.offload, self.max_entries, self.verify, self.exact = offload, max_entries, verify, exact
        for a in self.names:
            for b in self.names:
                if a != b and b.startswith(a + "."):
                    raise TemporalCacheError(f"wrapped modules nest: {a} contains {b}")
        self.signature = inspect.signature(model.forward)
        self.entries: list[_Entry] = []
        self.stats = {"precomputes": 0, "served": 0}
        self.offloaded: dict[str, _Offloaded] = {}
        self._snapshot: torch.Tensor | None = None  # the scheduler's timesteps (CPU copy)
        self._snapshot_ref: tuple | None = None  # (weakref, _version) of the scheduler tensor last checked
        self._mode = "idle"  # idle | record | serve
        self._recorded: dict[str, torch.Tensor] = {}
        self._active: tuple[_Entry, Any] | None = None
        self._verify_now = False
        self._rows_total = self._rows_step = 0
        self._device, self._dtype = None, None
        self._saved_forward: dict[str, Any] = {}
        for n in self.names:
            module = model.get_submodule(n)
            self._saved_forward[n] = module.__dict__.get("forward", _MISSING)
            module.forward = self._dispatcher(n, module.forward)
        self._hooks = [
            model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
            model.register_forward_hook(self._post_forward, always_call=True),
            model.register_state_dict_pre_hook(self._before_state_dict),
        ]
        model._qengine_temporal_cache = self

    # ------------------------------------------------------------------ public
    def disable(self) -> None:
        """Remove every hook, restore the wrapped modules' forward and their offloaded weights."""
        if self.model is None:
            return
        for h in self._hooks:
            h.remove()
        for n, saved in self._saved_forward.items():
            module = self.model.get_submodule(n)
            if saved is _MISSING:
                del module.forward
            else:
                module.forward = saved
        for off in self.offloaded.values():
            off.restore()
        self.offloaded.clear()
        self.entries.clear()
        self.model._qengine_temporal_cache = None
        self.model = None

    def reset(self) -> None:
        """Forget the cached entries and the timesteps snapshot (e.g. after a new set_timesteps)."""
        self.entries.clear()
        self._snapshot = self._snapshot_ref = None

    @property
    def enabled(self) -> bool:
        return self.model is not None

    def __enter__(self) -> TemporalCache:
        return self

    def __exit__(self, *exc) -> None:
        self.disable()

    def __repr__(self) -> str:
        return (f"TemporalCache({_cls(self.model) if self.model is not None else 'disabled'}, "
                f"{len(self.names)} modules, entries={len(self.entries)}, offloaded={bool(self.offloaded)}, "
                f"stats={self.stats})")

    # ------------------------------------------------------------------ wrapped modules
    def _dispatcher(self, name: str, original: Callable) -> Callable:
        def forward(*args, **kwargs):
            if self._mode == "record":
                if name in self._recorded:
                    raise TemporalCacheError(f"{name} was called twice in one precompute pass")
                with self._weights(name, self._device):
                    out = self._per_step(original, args, kwargs) if self.exact else original(*args, **kwargs)
                self._recorded[name] = out
                return out
            if self._mode == "serve":
                entry, steps = self._active
                table = entry.tables[name]
                if isinstance(steps, int):
                    out = table[steps]
                else:  # rows at different steps
                    out = table[steps, torch.arange(table.shape[1], device=table.device)]
                if self._verify_now:
                    self._check(name, original(*args, **kwargs), out)
                return out
            if name in self.offloaded:
                raise TemporalCacheError(f"{name} is offloaded by the temporal cache and only serves cached "
                                         f"values inside a denoiser call; disable() the cache to use it directly")
            return original(*args, **kwargs)
        return forward

    def _per_step(self, original: Callable, args: tuple, kwargs: dict) -> torch.Tensor:
        # The same GEMM shapes as the live calls (R rows), so the same bits; weights loaded once.
        n, r = self._rows_total, self._rows_step
        cut = lambda x, i: x[i:i + r] if torch.is_tensor(x) and x.dim() and x.shape[0] == n else x  # noqa: E731
        outs = [original(*[cut(a, i) for a in args], **{k: cut(v, i) for k, v in kwargs.items()})
                for i in range(0, n, r)]
        if not all(torch.is_tensor(o) for o in outs):
            raise TemporalCacheError("a cached module returned something other than a tensor")
        return torch.cat(outs)

    @contextlib.contextmanager
    def _weights(self, name: str, device) -> Iterator[None]:
        off = self.offloaded.get(name)
        if off is None:
            yield
            return
        off.load(device)
        try:
            yield
        finally:
            off.empty()

    def _check(self, name: str, live: torch.Tensor, cached: torch.Tensor) -> None:
        # The recipe restates a little of the model's forward (silu, sums, casts): compare once with
        # the live module so that a diffusers change cannot silently serve wrong values.
        try:
            live, cached = torch.broadcast_tensors(live.float(), cached.float())
        except (RuntimeError, AttributeError):
            raise TemporalCacheError(f"temporal cache self-check failed for {name}: live output "
                                     f"{tuple(getattr(live, 'shape', ()))} vs cached {tuple(cached.shape)}") from None
        err = ((live - cached).abs().max() / live.abs().max().clamp_min(1e-12)).item()
        tol = 1e-4 if self._dtype == torch.float32 else 3e-2
        if not err <= tol:
            raise TemporalCacheError(
                f"temporal cache self-check failed for {name} of {_cls(self.model)}: cached output differs from "
                f"the live module by {err:.2e} (relative to its max; tolerance {tol:g}). This diffusers version "
                f"computes the timestep path differently; disable the cache and report it.")

    # ------------------------------------------------------------------ denoiser hooks
    def _before_state_dict(self, module, prefix, keep_vars):
        if self.offloaded:
            raise TemporalCacheError("the temporal cache has offloaded weights of this model (its modules hold "
                                     "empty placeholders); disable() the cache before state_dict() or saving")

    def _pre_forward(self, model, args, kwargs):
        if self._mode != "idle":
            raise TemporalCacheError("re-entrant denoiser call under the temporal cache")
        call = self.signature.bind_partial(*args, **kwargs).arguments
        sample, timestep = call.get(self.recipe.sample_arg), call.get("timestep")
        if not torch.is_tensor(sample) or timestep is None:
            raise TemporalCacheError(f"the temporal cache needs `{self.recipe.sample_arg}` and `timestep` "
                                     f"in every call of {_cls(model)}")
        rows = sample.shape[0]
        if not torch.is_tensor(timestep):
            dtype = torch.float64 if isinstance(timestep, float) and _cls(model) != "UNet2DModel" else torch.int64
            timestep = torch.tensor([timestep], dtype=dtype, device=sample.device)
        cond = {}
        for k in self.recipe.cond_args:
            if k.startswith("added_cond_kwargs."):
                v = (call.get("added_cond_kwargs") or {}).get(k.partition(".")[2])
            else:
                v = call.get(k)
            if v is not None and not torch.is_tensor(v):
                v = torch.as_tensor(v, device=sample.device)
            cond[k] = v
        self._device, self._dtype = sample.device, sample.dtype
        entry = self._entry(cond, rows, sample, timestep)
        self._active = (entry, self._steps(entry, timestep, rows))
        self._verify_now = self.verify and self.stats["served"] == 0
        self._mode = "serve"

    def _post_forward(self, model, args, output):
        served = self._active is not None
        self._mode, self._active, self._verify_now = "idle", None, False
        if not served:  # the call failed before it was served
            return
        self.stats["served"] += 1
        if self.offload and not self.offloaded:
            for n in self.names:
                self.offloaded[n] = _Offloaded(self.model.get_submodule(n))

    # ------------------------------------------------------------------ timesteps
    def _timesteps(self) -> torch.Tensor:
        """The run's scheduler timesteps (CPU); raises if they changed since the cache was built."""
        if self.fixed_timesteps is not None:
            return self.fixed_timesteps
        cur = getattr(self.scheduler, "timesteps", None)
        if not torch.is_tensor(cur) or cur.numel() == 0:
            raise TemporalCacheError("the scheduler has no timesteps; call set_timesteps before sampling")
        if self._snapshot_ref is not None and self._snapshot_ref[0]() is cur and self._snapshot_ref[1] == cur._version:
            return self._snapshot
        values = cur.detach().cpu()
        snap = self._snapshot
        if snap is not None and not (values.shape == snap.shape and torch.equal(values, snap)):
            raise TemporalCacheError(
                f"the scheduler's timesteps changed under the temporal cache: cached for {_fmt(self._snapshot)}, "
                f"the scheduler now has {_fmt(values)}. Call cache.reset() (or enable the cache again) after "
                f"set_timesteps with new values.")
        self._snapshot = values.clone()
        self._snapshot_ref = (weakref.ref(cur), cur._version)
        return self._snapshot

    def _steps(self, entry: _Entry, timestep: torch.Tensor, rows: int):
        values = timestep.detach().reshape(-1).tolist()
        if len(values) not in (1, rows):
            raise TemporalCacheError(f"timestep has {len(values)} values for a batch of {rows}")
        try:
            steps = [entry.step_of[float(v)] for v in values]
        except KeyError:
            missing = next(float(v) for v in values if float(v) not in entry.step_of)
            raise TemporalCacheError(
                f"timestep {missing!r} is not among the {len(entry.step_of)} timesteps the temporal cache "
                f"holds ({_fmt(torch.tensor(list(entry.step_of)))}, as the model receives them): the "
                f"scheduler's timesteps changed under the cache, or the loop's scheduler is not the one the "
                f"cache was enabled with. Enable the cache with the scheduler that drives the loop, or "
                f"reset() it after set_timesteps.") from None
        if len(set(steps)) == 1:
            return steps[0]
        return torch.tensor(steps, device=self._device)

    # ------------------------------------------------------------------ entries
    def _entry(self, cond: dict, rows: int, sample: torch.Tensor, timestep: torch.Tensor) -> _Entry:
        sched_ts = self._timesteps()
        key = (rows, sample.dtype, sample.device, timestep.dtype, timestep.device)
        for i, e in enumerate(self.entries):
            if e.key == key and e.matches(cond):
                self.entries.insert(0, self.entries.pop(i))
                return e
        # The model's timestep argument for every step, made as the pipelines make it.
        ts = self.recipe.model_timesteps(sched_ts.to(device=timestep.device, dtype=timestep.dtype))
        step_of = {}
        for s, v in enumerate(ts.tolist()):
            step_of.setdefault(float(v), s)  # equal values (e.g. bf16 rounding) have equal rows
        entry = _Entry(key, cond, step_of)
        self._precompute(entry, ts, cond, rows, sample)
        self.entries.insert(0, entry)
        del self.entries[self.max_entries:]
        return entry

    @torch.no_grad()
    def _precompute(self, entry: _Entry, ts: torch.Tensor, cond: dict, rows: int, sample: torch.Tensor) -> None:
        steps = ts.shape[0]
        # Step-major rows: row s * R + r is batch row r at step s.
        cond = {k: None if v is None else _rows(v, rows, k) for k, v in cond.items()}
        cond = {k: None if v is None else v.repeat(steps, *[1] * (v.dim() - 1)) for k, v in cond.items()}
        like = torch.empty((steps * rows, 0), dtype=sample.dtype, device=sample.device)
        self._recorded, self._rows_total, self._rows_step = {}, steps * rows, rows
        self._mode = "record"
        try:
            self.recipe.run(self.model, ts.repeat_interleave(rows), cond, like)
        finally:
            self._mode = "idle"
        for name in self.names:
            out = self._recorded.get(name)
            if not torch.is_tensor(out) or out.dim() == 0 or out.shape[0] != steps * rows:
                raise TemporalCacheError(f"precompute of {name} gave {type(out).__name__} "
                                         f"{tuple(getattr(out, 'shape', ()))}, not {steps} steps x {rows} rows")
            entry.tables[name] = out.reshape(steps, rows, *out.shape[1:])
        self._recorded = {}
        self.stats["precomputes"] += 1


_MISSING = object()


def _fmt(t: torch.Tensor) -> str:
    v = [round(x, 4) for x in t.reshape(-1).tolist()]
    return f"{len(v)} timesteps {v}" if len(v) <= 8 else f"{len(v)} timesteps [{v[0]}, {v[1]}, ..., {v[-1]}]"


def temporal_module_names(model: nn.Module) -> list[str]:
    """The modules whose outputs the cache serves (and offloads) for ``model``: roots, then consumers."""
    if _cls(model) not in _RECIPES:
        raise TemporalCacheError(f"the temporal cache does not support {_cls(model)}; supported: {sorted(_RECIPES)}")
    roots, consumers = _RECIPES[_cls(model)]().modules(model)
    return roots + consumers


def enable_temporal_cache(pipe_or_denoiser, scheduler=None, *, timesteps=None, offload: bool = False,
                          max_entries: int = 2, verify: bool = True, exact: bool = False) -> TemporalCache:
    """Serve a denoiser's timestep path (time embedding and its per-block projections) from a cache
    computed once per sampling run in one batched pass; returns the :class:`TemporalCache`.

    ``pipe_or_denoiser``: a diffusers pipeline (its ``transformer``/``unet`` gets the cache and its
    ``scheduler`` is the default ``scheduler``) or the denoiser itself (then pass ``scheduler``, the
    one whose ``set_timesteps`` drives the loop, or ``timesteps``, the scheduler's timestep values).
    ``offload``: after the first call, keep the cached modules' weights on CPU (streamed back one
    module at a time when a new conditioning needs a precompute); restored by ``disable()``.
    ``max_entries``: conditionings kept (LRU). ``verify``: compare the first served call with the
    live modules. ``exact=True``: inside the one pass, run each module on one step's rows at a time
    (the GEMM shapes of uncached sampling, hence its exact bits; S small GEMMs per module instead
    of one, each module's weights still loaded once).
    Use as ``with qengine.enable_temporal_cache(pipe): pipe(...)``, or call ``disable()``.
    """
    model, attr = find_denoiser(pipe_or_denoiser)
    if scheduler is None and attr is not None:
        scheduler = getattr(pipe_or_denoiser, "scheduler", None)
    return TemporalCache(model, scheduler, timesteps, offload=offload, max_entries=max_entries, verify=verify,
                         exact=exact)
