"""``qengine eval``: full precision vs quantized reference models, same seeds and labels.

A row is (model, scheme, method). Methods:

=================== ==========================================================================
fp                  the full-precision model (FID / accuracy baseline; PSNR vs itself is n/a)
naive               round-to-nearest: ``quantize(model, preset(scheme, rank=0))``, dynamic scales
calibrated          ``calibrate`` (smoothing + low-rank + clipping + conv scales + mixed
                    precision under ``budget``), then ``quantize(model, calibration=...)``
no-smoothing        calibrated, smoothing search off
no-lowrank          calibrated with rank 0 (only differs from calibrated for the 4-bit presets)
no-mixed-precision  calibrated with budget 0
no-gptq             calibrated with round-to-nearest weights instead of GPTQ
=================== ==========================================================================

Samples are class-balanced (sample i has class i % 10) from ``initial_noise(N, seed)``;
calibration uses other noise (``calib_seed``) and ``calib_per_class`` trajectories per class, so
no row is calibrated on the trajectories it is scored on. PSNR/SSIM compare each quantized
sample with the full-precision sample of the same noise and label; FID compares the samples
with the Fashion-MNIST test set (10,000 images, padded to 32x32 like the training data).
"""
from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .. import api
from ..config import QuantConfig
from ..models import reference as ref
from . import fid as fidlib
from .metrics import class_accuracy, psnr, ssim

METHODS = ("fp", "naive", "calibrated", "no-smoothing", "no-lowrank", "no-mixed-precision", "no-gptq")
ABLATIONS = ("no-smoothing", "no-lowrank", "no-mixed-precision", "no-gptq")
SCHEMES = ("w8a8-int8", "w8a8-fp8", "w4a8", "w4a4")


@dataclass
class Row:
    model: str
    scheme: str
    method: str
    psnr: float | None = None
    ssim: float | None = None
    fid: float | None = None
    accuracy: float | None = None
    samples: int = 0
    calib_s: float | None = None
    sample_s: float = 0.0
    weight_mib: float = 0.0
    promoted: int = 0


def preset(scheme: str, rank: int | None = None) -> QuantConfig:
    """The scheme's preset; ``rank`` replaces the low-rank presets' rank (8-bit presets have none)."""
    cfg = QuantConfig.preset(scheme)
    if rank is not None and cfg.rank:
        cfg = QuantConfig.preset(scheme, rank=rank)
    return cfg


def calibrate_reference(model: torch.nn.Module, scheme: str, method: str = "calibrated", *, steps: int,
                        per_class: int = 2, seed: int = 10_000, budget: float = 0.1, progress: bool = False,
                        batch_size: int = 500, rows: int = 1024, maps: int = 32, probes: int = 4,
                        rank: int | None = None, options: dict | None = None, log=print):
    """Calibrate a reference denoiser along its own DDIM trajectories (``per_class`` per class).

    ``options``: extra ``SearchOptions`` fields (e.g. ``{"alpha_top": 3}``); the method's ablation wins."""
    from ..calib import SearchOptions, calibrate

    opts = SearchOptions(**{**(options or {}), "smooth": method != "no-smoothing", "lowrank": method != "no-lowrank",
                            "gptq": method != "no-gptq" and (options or {}).get("gptq", True)})
    labels = ref.class_grid_labels(per_class)
    return calibrate(model, preset(scheme, rank), lambda: ref.sample(model, labels, seed=seed, steps=steps,
                                                                     batch_size=batch_size),
                     steps_per_trajectory=steps, budget=0.0 if method == "no-mixed-precision" else budget,
                     options=opts, rows=rows, maps=maps, probes=probes, progress=progress, log=log)


def quantized_copy(model: torch.nn.Module, scheme: str, method: str, *, steps: int, budget: float, backend: str,
                   per_class: int = 2, batch_size: int = 500, progress: bool = False, rank: int | None = None,
                   options: dict | None = None, log=print):
    """``(quantized deep copy of model, calibration result or None)`` for one (scheme, method)."""
    q = copy.deepcopy(model)
    if method == "naive":
        return api.quantize(q, QuantConfig.preset(scheme, rank=0), backend=backend), None
    res = calibrate_reference(model, scheme, method, steps=steps, per_class=per_class, budget=budget,
                              progress=progress, batch_size=batch_size, rank=rank, options=options, log=log)
    return api.quantize(q, calibration=res, backend=backend), res


def evaluate(kind: str, schemes=SCHEMES, methods=("fp", "naive", "calibrated"), *, samples: int = 1000,
             steps: int = ref.DEFAULT_STEPS, seed: int = 0, budget: float = 0.1, calib_per_class: int = 2,
             device: str = "cpu", batch_size: int = 500, fid: bool = True, out_dir: str | Path = "eval-out",
             grid_per_class: int = 6, progress: bool = True, on_row=None, rank: int | None = None,
             cache_dir: str | Path | None = None, options: dict | None = None, log=print) -> list[Row]:
    """Evaluate one reference model (``"dit"`` or ``"unet"``); returns the rows.

    Writes to ``out_dir`` a PNG grid per quantized row and each calibration's per-layer table;
    ``on_row(row)`` is called as each row is done (the CLI rewrites its report then, so a run
    stopped early keeps what it finished).
    """
    out_dir = Path(out_dir)
    (out_dir / "grids").mkdir(parents=True, exist_ok=True)
    backend = "auto" if torch.device(device).type == "cpu" else "reference"
    model = ref.load_denoiser(kind, device=device)
    clf = ref.load_classifier(device=device)
    labels = torch.arange(samples) % len(ref.CLASSES)
    net = ref_stats = None
    if fid:
        net = fidlib.load_inception(device=device)

        def test_stats():
            test_imgs, _ = ref.load_fashion_mnist("test")
            return fidlib.stats(fidlib.features(net, ref.to_uint8(ref.to_model_space(test_imgs))))

        ref_stats = _cached(cache_dir, "fid-ref-fashion-mnist-test.pt", test_stats)
    t = time.perf_counter()
    fp = _cached(cache_dir, f"fp-{kind}-{samples}-{steps}-{seed}.pt",
                 lambda: ref.to_uint8(ref.sample(model, labels, seed=seed, steps=steps, batch_size=batch_size)))
    fp_s = time.perf_counter() - t
    todo = [("fp", "fp")] if "fp" in methods else []
    for scheme in schemes:
        for m in methods:
            if m == "fp" or (m == "no-lowrank" and QuantConfig.preset(scheme).rank == 0):
                continue  # the 8-bit presets have no low-rank branch: that ablation is the calibrated row
            if m not in METHODS:
                raise ValueError(f"unknown method {m!r}; choose from {METHODS}")
            todo.append((scheme, m))
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(todo), desc=f"eval {kind}", unit="row")
    rows = []
    for scheme, method in todo:
        row = Row(kind, scheme, method, samples=samples)
        if method == "fp":
            imgs, row.sample_s, qmodel = fp, fp_s, model
        else:
            t = time.perf_counter()
            qmodel, res = quantized_copy(model, scheme, method, steps=steps, budget=budget, backend=backend,
                                         per_class=calib_per_class, batch_size=batch_size, rank=rank,
                                         options=options, log=lambda s: None)
            row.calib_s = round(time.perf_counter() - t, 1)
            if res is not None:
                from ..calib import summary_table

                row.promoted = len(res.meta["promoted"])
                (out_dir / f"calib-{kind}-{scheme}-{method}.txt").write_text(
                    summary_table(res.report) + f"\n\n{json.dumps(res.meta, default=str)}\n")
            t = time.perf_counter()
            imgs = ref.to_uint8(ref.sample(qmodel, labels, seed=seed, steps=steps, batch_size=batch_size))
            row.sample_s = time.perf_counter() - t
            row.psnr, row.ssim = psnr(imgs, fp), ssim(imgs, fp)
            save_grid(fp, imgs, labels, out_dir / "grids" / f"{kind}-{scheme}-{method}.png", grid_per_class)
        row.weight_mib = api.model_bytes(qmodel) / 2 ** 20
        row.accuracy = class_accuracy(clf, imgs, labels)
        if fid:
            row.fid = fidlib.frechet_distance(*fidlib.stats(fidlib.features(net, imgs)), *ref_stats)
        rows.append(row)
        log(format_row(row))
        if on_row is not None:
            on_row(row)
        if bar is not None:
            bar.update()
        if qmodel is not model:
            del qmodel
    if bar is not None:
        bar.close()
    return rows


def _cached(cache_dir, name: str, compute):
    """``compute()``, or what an earlier call with the same ``name`` saved in ``cache_dir`` (None: no cache)."""
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / name
    if path.is_file():
        return torch.load(path)
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    torch.save(value, tmp)
    os.replace(tmp, path)  # atomic: a parallel reader sees the whole file or none
    return value


def format_row(r: Row) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    return (f"{r.model:<5} {r.scheme:<10} {r.method:<19} PSNR {f(r.psnr, '6.2f')} SSIM {f(r.ssim, '.4f')} "
            f"FID {f(r.fid, '7.2f')} acc {f(r.accuracy, '.3f')} ({r.samples} samples, sampling {r.sample_s:.1f} s"
            f"{'' if r.calib_s is None else f', calibration {r.calib_s:.1f} s'})")


def save_grid(fp: torch.Tensor, q: torch.Tensor, labels: torch.Tensor, path: Path, per_class: int = 6,
              scale: int = 2) -> Path:
    """PNG: one row per class, ``per_class`` full-precision samples | the quantized samples of the same noise."""
    from PIL import Image

    tiles = []
    counts = [int((labels == c).sum()) for c in range(len(ref.CLASSES))]
    per_class = min([per_class] + [n for n in counts if n])  # rows of equal width with few samples
    for c in range(len(ref.CLASSES)):
        idx = (labels == c).nonzero().flatten()[:per_class]
        if len(idx) == 0:  # fewer samples than classes (smoke tests)
            continue
        left = torch.cat(list(fp[idx, 0]), dim=1)
        right = torch.cat(list(q[idx, 0]), dim=1)
        gap = torch.full((left.shape[0], 4), 255, dtype=torch.uint8)
        tiles.append(torch.cat([left, gap, right], dim=1))
    grid = torch.cat(tiles, dim=0)
    img = Image.fromarray(grid.numpy(), mode="L")
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def write_report(rows: list[Row], out_dir: str | Path, meta: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """``results.json`` and ``results.md`` (the README table) in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "results.json"
    js.write_text(json.dumps({"meta": meta or {}, "rows": [asdict(r) for r in rows]}, indent=1))
    md = out_dir / "results.md"
    md.write_text(markdown_table(rows, meta))
    return js, md


def markdown_table(rows: list[Row], meta: dict[str, Any] | None = None) -> str:
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)

    lines = ["| model | scheme | method | PSNR (dB) | SSIM | FID | class acc. | MiB | calib. s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.model} | {r.scheme if r.method != 'fp' else '16-bit'} | {r.method}"
                     f"{f' ({r.promoted} promoted)' if r.promoted else ''} | {f(r.psnr, '.2f')} | {f(r.ssim, '.4f')} | "
                     f"{f(r.fid, '.2f')} | {f(r.accuracy, '.3f')} | {r.weight_mib:.2f} | {f(r.calib_s, '.0f')} |")
    if meta:
        lines += ["", "Run: " + ", ".join(f"{k}={v}" for k, v in meta.items())]
    return "\n".join(lines) + "\n"


def load_rows(paths) -> list[Row]:
    """Rows of several ``results.json`` (e.g. from parallel runs), sorted by model, then fp first, then
    scheme and method in table order (``SCHEMES``, ``METHODS``); a (model, scheme, method) seen twice
    keeps its first row (parallel runs of one model each sample the same fp row)."""
    rows, seen = [], set()
    for p in paths:
        for r in json.loads(Path(p).read_text())["rows"]:
            row = Row(**r)
            key = (row.model, row.scheme if row.method != "fp" else "", row.method)
            if key not in seen:
                seen.add(key)
                rows.append(row)

    def order(r: Row):
        scheme = SCHEMES.index(r.scheme) if r.scheme in SCHEMES else -1
        return r.model, r.method != "fp", scheme, METHODS.index(r.method) if r.method in METHODS else len(METHODS)

    return sorted(rows, key=order)
