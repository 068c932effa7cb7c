"""Session 27: the quantize kernel with the low-rank down-projection (tile kernel), its variants.

QENGINE_QLR_HINT (read per call by the launcher, an experiment): 0 as committed, 1 cache hints on
pass 1 (x L1 no-allocate, lora_down nc + L1 evict-last), 2 pass 2 walks its slots last to first,
3 both. Each variant is captured in its own CUDA graph (N calls over rotated inputs, so x comes from
HBM where it does not fit L2 as in the model), all timed in interleaved rounds; medians in us per
call. The plain row kernel (no branch) is the reference. Outputs are checked bit-equal to variant 0.

    python3 qlr_time.py [--rounds 15] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import torch

import qengine  # noqa: F401  (loads qengine._C)

Q = torch.ops.qengine
SHAPES = [(4608, 3072), (4096, 3072), (4608, 15360), (4096, 12288), (512, 12288)]
L2 = 50 * 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--variants", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    results = []
    for fmt in ("int8", "fp8"):
        op = getattr(Q, f"quantize_act_{fmt}")
        for m, k in SHAPES:
            nbytes = m * k * 2
            nsets = max(2, min(8, -(-3 * L2 // nbytes)))
            xs = [torch.randn(m, k, device=dev, generator=gen).bfloat16() for _ in range(nsets)]
            down = (torch.randn(a.rank, k, device=dev, generator=gen) / k**0.5).bfloat16()
            calls = max(nsets, 8)
            ref = None
            graphs = {}
            for v in ["plain"] + a.variants:
                os.environ["QENGINE_QLR_HINT"] = str(0 if v == "plain" else v)
                fn = (lambda x: op(x, None, None, None)) if v == "plain" else (lambda x: op(x, None, down, None))
                out = fn(xs[0])
                torch.cuda.synchronize()
                if v != "plain":
                    if ref is None:
                        ref = out
                    else:
                        same = all(torch.equal(p, q) for p, q in zip(out, ref) if p is not None)
                        assert same, f"variant {v} differs from variant 0 at {fmt} {m}x{k}"
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for i in range(2):
                        fn(xs[i % nsets])
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for i in range(calls):
                        fn(xs[i % nsets])
                graphs[v] = g
            os.environ["QENGINE_QLR_HINT"] = "0"
            times = {v: [] for v in graphs}
            for g in graphs.values():
                g.replay()
            torch.cuda.synchronize()
            for _ in range(a.rounds):
                for v, g in graphs.items():
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record()
                    g.replay()
                    e1.record()
                    e1.synchronize()
                    times[v].append(e0.elapsed_time(e1) * 1000 / calls)
            med = {str(v): statistics.median(t) for v, t in times.items()}
            results.append({"fmt": fmt, "M": m, "K": k, "rank": a.rank, "us": med})
            print(f"{fmt} {m}x{k} r{a.rank}: " + "  ".join(f"{v}={t:.1f}" for v, t in med.items()), flush=True)
            del xs, graphs
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
