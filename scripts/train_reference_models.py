"""Train qengine's reference models on Fashion-MNIST: a class-conditional DiT, a class-conditional
UNet2DModel (denoisers, DDPM epsilon objective) and the CNN classifier that scores samples.

    python scripts/train_reference_models.py dit --minutes 6 --out models
    python scripts/train_reference_models.py unet --minutes 6 --out models
    python scripts/train_reference_models.py classifier --epochs 8 --out models

A denoiser trains until ``--max-steps`` or ``--minutes`` (whichever first), keeps an EMA of its
weights and writes the EMA as fp16 safetensors to ``<out>/fashion-<model>/`` plus
``train_log.json`` (steps done, seed, losses). ``--resume`` continues from
``<out>/fashion-<model>.state.pt`` (written every ``--save-every`` minutes and at the end), so a
run can be split over calls shorter than the whole training. Reproduce a shipped model with the
``steps`` recorded in its ``train_log.json`` as ``--max-steps`` (and no time limit).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qengine.models import reference as ref  # noqa: E402


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train_denoiser(args, device) -> dict:
    from diffusers import DDPMScheduler

    torch.manual_seed(args.seed)
    imgs, labels = ref.load_fashion_mnist("train", args.data)
    data = ref.to_model_space(imgs).to(device)
    labels = labels.to(device)
    model = ref.build_denoiser(args.model).to(device).train()
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    sched = DDPMScheduler(**ref.SCHEDULER_CONFIG)
    alphas = sched.alphas_cumprod.to(device)
    state_path = Path(args.out) / f"fashion-{args.model}.state.pt"
    step, log = 0, []
    if args.resume and state_path.is_file():
        st = torch.load(state_path, map_location=device)
        model.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        step, log = st["step"], st["log"]
        print(f"resumed {args.model} at step {step}")
    gen = torch.Generator(device=device).manual_seed(args.seed + step)
    t0 = time.time()
    last_save = t0
    running = 0.0
    while step < args.max_steps and (time.time() - t0) < args.minutes * 60:
        idx = torch.randint(0, len(data), (args.batch_size,), device=device, generator=gen)
        x0, y = data[idx], labels[idx]
        noise = torch.randn(x0.shape, device=device, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), device=device, generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        # Linear warm-up then cosine decay to 10%: stable for transformers, and the same for both models.
        frac = min(1.0, step / max(1, args.max_steps_for_schedule))
        lr = args.lr * min(1.0, (step + 1) / 500) * (0.55 + 0.45 * math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            pred = ref.denoise(model, xt, t, y)
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        step += 1
        running += loss.item() if step % 50 == 0 else 0.0
        if step % 500 == 0:
            log.append({"step": step, "loss": running / 10, "minutes": (time.time() - t0) / 60})
            print(f"{args.model} step {step} loss {running / 10:.4f} lr {lr:.2e} {(time.time() - t0):.0f}s", flush=True)
            running = 0.0
        if time.time() - last_save > args.save_every * 60:
            _atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                                "step": step, "log": log}, state_path)
            last_save = time.time()
    _atomic_torch_save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                        "step": step, "log": log}, state_path)
    out_dir = Path(args.out) / f"fashion-{args.model}"
    ema.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    info = {"model": args.model, "steps": step, "batch_size": args.batch_size, "lr": args.lr, "ema": args.ema,
            "seed": args.seed, "params": sum(p.numel() for p in ema.parameters()), "log": log,
            "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "train_minutes": (time.time() - t0) / 60}
    (out_dir / "train_log.json").write_text(json.dumps(info, indent=2))
    return info


def train_classifier(args, device) -> dict:
    from safetensors.torch import save_file

    torch.manual_seed(args.seed)
    tr_x, tr_y = ref.load_fashion_mnist("train", args.data)
    te_x, te_y = ref.load_fashion_mnist("test", args.data)
    tr_x, te_x = ref.to_model_space(tr_x).to(device), ref.to_model_space(te_x).to(device)
    tr_y, te_y = tr_y.to(device), te_y.to(device)
    clf = ref.Classifier().to(device)
    steps_per_epoch = len(tr_x) // args.batch_size
    opt = torch.optim.AdamW(clf.parameters(), lr=args.lr, weight_decay=5e-4)
    total = args.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total)
    t0 = time.time()
    for epoch in range(args.epochs):
        clf.train()
        perm = torch.randperm(len(tr_x), device=device)
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch_size:(i + 1) * args.batch_size]
            x = tr_x[idx]
            # Small random shifts: generated samples are not pixel-aligned like the dataset.
            dx, dy = torch.randint(-2, 3, (2,)).tolist()
            x = torch.roll(x, (dy, dx), dims=(2, 3))
            loss = F.cross_entropy(clf(x), tr_y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        acc = classifier_accuracy(clf, te_x, te_y)
        print(f"classifier epoch {epoch + 1}: test accuracy {acc:.4f} ({time.time() - t0:.0f}s)", flush=True)
    out_dir = Path(args.out) / "fashion-classifier"
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in clf.state_dict().items()
               if v.dtype.is_floating_point} | {k: v for k, v in clf.state_dict().items()
                                                 if not v.dtype.is_floating_point}, out_dir / "model.safetensors")
    info = {"model": "classifier", "epochs": args.epochs, "test_accuracy": acc, "seed": args.seed,
            "params": sum(p.numel() for p in clf.parameters()), "train_minutes": (time.time() - t0) / 60}
    (out_dir / "train_log.json").write_text(json.dumps(info, indent=2))
    return info


@torch.no_grad()
def classifier_accuracy(clf, x, y) -> float:
    clf.eval()
    pred = torch.cat([clf(x[i:i + 2000]).argmax(1) for i in range(0, len(x), 2000)])
    return (pred == y).float().mean().item()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=("dit", "unet", "classifier"))
    p.add_argument("--out", default="models", help="folder for fashion-<model>/ (default: %(default)s)")
    p.add_argument("--data", default=None, help="folder with the Fashion-MNIST idx .gz files")
    p.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of a denoiser run")
    p.add_argument("--max-steps", type=int, default=100_000)
    p.add_argument("--max-steps-for-schedule", type=int, default=20_000,
                   help="steps over which the learning rate decays (fix it to reproduce a run)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=None, help="default: 3e-4 denoisers, 3e-3 classifier")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--epochs", type=int, default=8, help="classifier epochs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=float, default=2.0, help="minutes between resumable checkpoints")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.lr is None:
        args.lr = 3e-3 if args.model == "classifier" else 3e-4
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    Path(args.out).mkdir(parents=True, exist_ok=True)
    info = train_classifier(args, device) if args.model == "classifier" else train_denoiser(args, device)
    print(json.dumps({k: v for k, v in info.items() if k != "log"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
