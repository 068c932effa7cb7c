"""Session 27: the quantize kernel with the low-rank down-projection (tile kernel), its variants.

Call 1 (QENGINE_QLR_HINT): 0 as committed, 1 cache hints on pass 1 (x L1 no-allocate, lora_down
nc + L1 evict-last), 2 pass 2 walks its slots last to first, 3 both. Call 2 (QENGINE_QLR_CFG, bf16
rank-32 plain mode): 0 the launch rule, 1 8 warps per 16-row tile (2 slots of loads in flight,
<= 2 blocks per SM), 2 8 warps / 1 slot / <= 3 blocks, 3 8 warps / 1 slot / <= 4 blocks; for the
tile kernel on a whole row ("tile") and the gelu-cat op (GELU + absmax kernel, then the one-pass
tile kernel: "gelu"). Each variant is captured in its own CUDA graph (N calls over rotated inputs,
so x comes from HBM where it does not fit L2 as in the model), all timed in interleaved rounds;
medians in us per call. The plain row kernel (no branch) is the reference. q and scale are checked
bit-equal to variant 0, lowrank_act to within 1e-5 (the warp count orders its partial sums).

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
# (M, Kx, Kg): Kg > 0 times the gelu-cat op on [x | gelu(g)] (Kx may be 0), else the tile kernel on x.
SHAPES = [(4608, 3072, 0), (4096, 3072, 0), (4608, 15360, 0), (4096, 12288, 0), (512, 12288, 0),
          (4608, 3072, 12288), (4096, 0, 12288), (512, 0, 12288)]
ENV = "QENGINE_QLR_CFG"
L2 = 50 * 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--variants", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--formats", nargs="+", default=["int8", "fp8"])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dev = torch.device("cuda")
    gen = torch.Generator(device=dev).manual_seed(0)
    results = []
    for fmt in a.formats:
        op = getattr(Q, f"quantize_act_{fmt}")
        gop = getattr(Q, f"quantize_act_{fmt}_gelu_cat_lowrank")
        pop = getattr(Q, f"quantize_act_{fmt}_gelu_cat")
        for m, kx, kg in SHAPES:
            k = kx + kg
            nbytes = m * k * 2
            nsets = max(2, min(8, -(-3 * L2 // nbytes)))
            if kg:
                sets = [(torch.randn(m, kx, device=dev, generator=gen).bfloat16() if kx else None,
                         torch.randn(m, kg, device=dev, generator=gen).bfloat16()) for _ in range(nsets)]
            else:
                sets = [(torch.randn(m, k, device=dev, generator=gen).bfloat16(), None) for _ in range(nsets)]
            down = (torch.randn(a.rank, k, device=dev, generator=gen) / k**0.5).bfloat16()
            calls = max(nsets, 8)
            ref = None
            graphs = {}
            for v in ["plain"] + a.variants:
                os.environ[ENV] = str(0 if v == "plain" else v)
                if kg:
                    fn = ((lambda s: pop(s[0], s[1], None)) if v == "plain"
                          else (lambda s: gop(s[0], s[1], None, down, None)))
                else:
                    fn = (lambda s: op(s[0], None, None, None)) if v == "plain" else (lambda s: op(s[0], None, down, None))
                out = fn(sets[0])
                torch.cuda.synchronize()
                if v != "plain":
                    if ref is None:
                        ref = out
                    else:
                        assert torch.equal(out[0].view(torch.uint8), ref[0].view(torch.uint8)), f"q differs: {v} {fmt} {m}x{k}"
                        assert torch.equal(out[1], ref[1]), f"scale differs: variant {v} {fmt} {m}x{k}"
                        err = ((out[2] - ref[2]).norm() / ref[2].norm()).item()
                        assert err < 1e-5, f"lowrank differs by {err}: variant {v} {fmt} {m}x{k}"
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for i in range(2):
                        fn(sets[i % nsets])
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):
                    for i in range(calls):
                        fn(sets[i % nsets])
                graphs[v] = g
            os.environ[ENV] = "0"
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
            what = f"gelu {m}x({kx}+{kg})" if kg else f"tile {m}x{k}"
            results.append({"fmt": fmt, "what": what, "M": m, "K": k, "rank": a.rank, "us": med})
            print(f"{fmt} {what} r{a.rank}: " + "  ".join(f"{v}={t:.1f}" for v, t in med.items()), flush=True)
            del sets, graphs
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
