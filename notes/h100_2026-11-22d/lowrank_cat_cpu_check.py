"""Does the K-concat low-rank trick (e4m3 hi/lo split appended along K) hold precision on real layers?

The CPU check run before qengine/formats/lowrank_cat.py was written (three products, no
padding; the shipped layout adds the fourth where it fits). Per Linear of the shipped fashion-dit,
with its activations over a 10-step sampling run: sqnrA / sqnrB = layer output SQNR vs float of the
epilogue path (bf16 lowrank_act) / the cat path; termA / termB = the branch alone vs its float
value; grow% / gmax = tokens whose scale grew, and by how much at most.
    python notes/h100_2026-11-22d/lowrank_cat_cpu_check.py 16
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from qengine.models.reference import load_denoiser, sample
from qengine.calib.search import smooth_vector
from qengine.nn.quantize_weight import lowrank_split
torch.manual_seed(0)
F8 = torch.float8_e4m3fn
def e4m3(v): return v.clamp(-448, 448).to(F8).float()
def sqnr(ref, x): return (10*torch.log10(ref.pow(2).sum()/(ref-x).pow(2).sum())).item()

model = load_denoiser("dit")
acts = {}
def hook(name):
    def f(mod, inp, out): acts.setdefault(name, []).append(inp[0].detach().reshape(-1, inp[0].shape[-1])[::7])
    return f
for n, m in model.named_modules():
    if isinstance(m, torch.nn.Linear) and m.in_features >= 64 and m.out_features >= 64:
        m.register_forward_hook(hook(n))
with torch.no_grad():
    sample(model, torch.arange(8), steps=10)
r = int(sys.argv[1]) if len(sys.argv) > 1 else 16
print(f"rank {r}")
print(f"{'layer':40s} {'M':>6s} sqnrA  sqnrB  termA  termB  grow%  gmax")
for n, m in model.named_modules():
    if n not in acts: continue
    x = torch.cat(acts[n]).float()
    W = m.weight.detach().float()
    s = smooth_vector(x.abs().amax(0), W, 0.5)
    xs = x / s
    Ws = W * s
    rr = min(r, min(W.shape)//4 //16*16)
    down, up = lowrank_split(Ws, rr)
    down, up = down.bfloat16().float(), up.bfloat16().float()
    R = Ws - up @ down
    ws = R.abs().amax(1) / 448
    qw = e4m3(R / ws[:, None])
    yref = x @ W.T
    lr = xs @ down.T                       # fp32 low-rank act
    ax = xs.abs().amax(1)
    # path A: today's kernels
    sa = ax / 448
    qa = e4m3(xs / sa[:, None])
    termA = lr.bfloat16().float() @ up.T
    yA = (qa @ qw.T) * sa[:, None] * ws[None, :] + termA
    # path B: K-concat
    beta = (up.abs() / ws[:, None]).amax(0)      # [r]: max_n |L2[n,j]| / w_s[n]
    c = 448 / beta
    lrc = lr / c
    sb = torch.maximum(ax, lrc.abs().amax(1)) / 448
    grow = sb / sa
    qb = e4m3(xs / sb[:, None])
    Ap = lrc / sb[:, None]; Ah = e4m3(Ap); Al = e4m3(Ap - Ah)
    Bp = up * c[None, :] / ws[:, None]; Bh = e4m3(Bp); Bl = e4m3(Bp - Bh)
    term = Ah @ Bh.T + Al @ Bh.T + Ah @ Bl.T
    termB = term * sb[:, None] * ws[None, :]
    yB = (qb @ qw.T + term) * sb[:, None] * ws[None, :]
    texact = lr @ up.T
    print(f"{n:40s} {x.shape[0]:6d} {sqnr(yref,yA):5.1f}  {sqnr(yref,yB):5.1f}  {sqnr(texact,termA):5.1f}  {sqnr(texact,termB):5.1f}  {100*(grow>1).float().mean():5.1f}  {grow.max():5.2f}")
