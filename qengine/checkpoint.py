"""Checkpoints: a folder with ``config.json`` and ``model.safetensors``.

``config.json`` records the format version, the model's architecture and config, the
quantization config, every quantized layer's spec, and the size and SHA-256 of the tensor file.

Saving is atomic: everything is written to a temporary folder beside the target, synced, and
renamed into place; an earlier checkpoint at the target is removed only after the new one is in
place. Loading validates everything (version, architecture, model config, layer specs, tensor
names, shapes and dtypes, file size and hash) before it touches the model, so any error leaves
the model as it was.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .version import __version__
from .api import QuantState, build_empty_layer, is_quantized, set_submodule
from .config import ConfigError, LayerQuantConfig, QuantConfig
from .formats import FORMAT_VERSION
from .formats.w4a8_layout import LAYOUT_NAME as W4A8_WEIGHT_LAYOUT
from .integrations.diffusers import find_denoiser
from .integrations.fuse_projections import fuse_qkv_projections, unfuse_qkv_projections

CHECKPOINT_FORMAT = "qengine-checkpoint"
CONFIG_NAME = "config.json"
TENSORS_NAME = "model.safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, read, or applied to this model."""


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    cfg = getattr(model, "config", None)
    if cfg is None or not hasattr(cfg, "items"):
        return None
    # JSON round trip: tuples become lists, so saved and live configs compare equal.
    return json.loads(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}, default=str))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(obj: Any, path: str | os.PathLike) -> Path:
    """Write the quantized model (or pipeline's denoiser) ``obj`` to folder ``path`` atomically."""
    from safetensors.torch import save_file

    model, _ = find_denoiser(obj)
    state: QuantState | None = getattr(model, "qengine_state", None)
    if state is None:
        raise CheckpointError("model is not quantized by qengine: call qengine.quantize(model, config) first")
    path = Path(path)
    tensors, seen = {}, set()
    for name, t in model.state_dict().items():
        if t.device.type == "meta":
            raise CheckpointError(f"tensor {name} is on the meta device and has no data to save")
        t = t.detach().contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        tensors[name] = t.clone() if key in seen else t  # safetensors refuses shared storage
        seen.add(key)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "format_version": FORMAT_VERSION,
        "qengine_version": __version__,
        "architecture": type(model).__name__,
        "model_config": _model_config(model),
        "quant_config": state.config.to_dict(),
        "layers": state.layers,
        "kept_16bit": state.kept,
        # Which byte layout the stored w4a8 weights use (format version 2 introduced it); a
        # reader checks it so a future layout change cannot be loaded as this one.
        "w4a8_weight_layout": W4A8_WEIGHT_LAYOUT,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_file(tensors, str(tmp / TENSORS_NAME), metadata={"format": CHECKPOINT_FORMAT})
        meta["tensors"] = {"file": TENSORS_NAME, "bytes": (tmp / TENSORS_NAME).stat().st_size,
                           "sha256": _sha256(tmp / TENSORS_NAME)}
        with open(tmp / CONFIG_NAME, "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        with open(tmp / TENSORS_NAME, "rb+") as f:
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(path, old)
        os.rename(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's ``config.json``, checked for format and version."""
    path = Path(path)
    cfg_path = path / CONFIG_NAME
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist")
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing: not a qengine checkpoint")
    try:
        meta = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path} is corrupt (not valid JSON: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{cfg_path} is not a qengine checkpoint config")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {meta.get('format_version')}; this qengine "
                              f"({__version__}) reads version {FORMAT_VERSION}")
    for key in ("architecture", "quant_config", "layers", "tensors"):
        if key not in meta:
            raise CheckpointError(f"{cfg_path} lacks the {key!r} entry")
    if meta.get("w4a8_weight_layout") != W4A8_WEIGHT_LAYOUT:
        raise CheckpointError(f"{path} stores w4a8 weights in layout {meta.get('w4a8_weight_layout')!r}; this "
                              f"qengine reads {W4A8_WEIGHT_LAYOUT!r}")
    return meta


def _check_model(model: nn.Module, meta: dict[str, Any], path: Path) -> None:
    arch = type(model).__name__
    if meta["architecture"] != arch:
        raise CheckpointError(f"{path} was saved from a {meta['architecture']}, not a {arch}")
    saved, live = meta.get("model_config"), _model_config(model)
    if saved is not None and live is not None:
        diff = sorted(k for k in set(saved) | set(live) if saved.get(k) != live.get(k))
        if diff:
            shown = ", ".join(f"{k}: checkpoint {saved.get(k)!r} vs model {live.get(k)!r}" for k in diff[:5])
            raise CheckpointError(f"{path} was saved from a {arch} with a different config ({shown})")
    for name, spec in meta["layers"].items():
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            raise CheckpointError(f"{path} quantizes layer {name!r}, which this model does not have") from None
        want = nn.Linear if spec.get("kind") == "linear" else nn.Conv2d
        if not isinstance(mod, want):
            raise CheckpointError(f"{path}: layer {name!r} is a {type(mod).__name__} in the model, "
                                  f"the checkpoint expects {want.__name__}")
        dims = (("in_features", "out_features") if want is nn.Linear else ("in_channels", "out_channels"))
        for d in dims:
            if spec.get(d) != getattr(mod, d):
                raise CheckpointError(f"{path}: layer {name!r} has {d}={getattr(mod, d)} in the model, "
                                      f"{spec.get(d)} in the checkpoint")


def _read_checked(model: nn.Module, meta: dict[str, Any], path: Path, device, backend: str, verify_hash: bool):
    """Every tensor of the checkpoint, checked against the model as it will be (changes nothing)."""
    from safetensors import SafetensorError, safe_open

    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None and first.device.type != "meta" else torch.device("cpu")

    tfile = path / meta["tensors"].get("file", TENSORS_NAME)
    if not tfile.is_file():
        raise CheckpointError(f"{tfile} is missing")
    size = tfile.stat().st_size
    if size != meta["tensors"].get("bytes"):
        raise CheckpointError(f"{tfile} is {size} bytes, the checkpoint says {meta['tensors'].get('bytes')}: "
                              "truncated or replaced")
    if verify_hash and _sha256(tfile) != meta["tensors"].get("sha256"):
        raise CheckpointError(f"{tfile} does not match its SHA-256 in {CONFIG_NAME}: the file is corrupt")

    # The model as it will be: quantized layers on meta (shapes and dtypes only), the rest as is.
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.bfloat16)
    try:
        new_layers = {n: build_empty_layer(s, dtype, "meta", backend) for n, s in meta["layers"].items()}
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid layer spec: {e}") from None
    expected: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if not any(name.startswith(q + ".") for q in new_layers):
            expected[name] = t
    for qname, layer in new_layers.items():
        expected.update({f"{qname}.{k}": t for k, t in layer.state_dict().items()})

    try:
        with safe_open(str(tfile), framework="pt", device=str(device)) as f:
            keys = set(f.keys())
            missing, unexpected = sorted(set(expected) - keys), sorted(keys - set(expected))
            if missing or unexpected:
                raise CheckpointError(f"{tfile} does not match the model: missing {missing[:5]}"
                                      f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                                      f"{'...' if len(unexpected) > 5 else ''}")
            tensors = {}
            for k in sorted(keys):
                t = f.get_tensor(k)
                e = expected[k]
                if t.shape != e.shape:
                    raise CheckpointError(f"{tfile}: {k} has shape {list(t.shape)}, the model needs {list(e.shape)}")
                quantized = not e.is_floating_point() or e.element_size() == 1
                if quantized and t.dtype != e.dtype:
                    raise CheckpointError(f"{tfile}: {k} has dtype {t.dtype}, the scheme stores {e.dtype}")
                tensors[k] = t
    except SafetensorError as e:
        raise CheckpointError(f"{tfile} is corrupt or truncated: {e}") from None

    return tensors, new_layers


def load(obj: Any, path: str | os.PathLike, *, device: str | torch.device | None = None, backend: str = "auto",
         verify_hash: bool = True, fused_kernels: bool = True) -> Any:
    """Swap in the quantized layers saved at ``path`` and load every tensor; returns ``obj``.

    ``obj`` is a float model (or a pipeline holding one) of the same architecture and config;
    it may live on the meta device. Tensors go to ``device`` (default: where the model's
    parameters are; CPU for a meta model). On any error the model is left unchanged.
    """
    path = Path(path)
    model, _ = find_denoiser(obj)
    if is_quantized(model):
        raise CheckpointError("this model is already quantized; load a checkpoint into a float model")
    meta = read_config(path)
    try:
        quant_config = QuantConfig.from_dict(meta["quant_config"])
        for s in meta["layers"].values():
            LayerQuantConfig(s["scheme"], s["group_size"], s["rank"])
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: invalid quantization config: {e}") from None
    # A checkpoint of fused projections (quant_config.fuse_qkv) holds to_qkv / to_kv: fuse the
    # float model the same way first, and undo that if any check below fails.
    fused = fuse_qkv_projections(model) if quant_config.fuse_qkv else []
    try:
        _check_model(model, meta, path)
        tensors, new_layers = _read_checked(model, meta, path, device, backend, verify_hash)
    except BaseException:
        unfuse_qkv_projections(fused)
        raise

    # Everything checked: now change the model.
    for qname, layer in new_layers.items():
        prefix = qname + "."
        layer.load_state_dict({k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)},
                              strict=True, assign=True)
        set_submodule(model, qname, layer)
    model.load_state_dict(tensors, strict=True, assign=True)
    if fused_kernels:  # as qengine.quantize does: fused norm kernels, FP8 low-rank branch folded into K
        from .nn import enable_fused_kernels

        enable_fused_kernels(model)
    model.qengine_state = QuantState(quant_config, dict(meta["layers"]), dict(meta.get("kept_16bit", {})))
    return obj
