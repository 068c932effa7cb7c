#!/usr/bin/env bash
# Session 17 call 3: the FLUX.1-dev step (1024x1024, batch 1, eager) with W4A8 after the
# 128x256 tile and the stream-K configs, against bf16 and W8A8 FP8 in the same run; then one
# ncu profile of the 128x64 stream-K config at 64x3072->3072 (why it is no faster than the
# data-parallel 128x128 tile there).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r3; mkdir -p $R
t0=$SECONDS
OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; head -2 $R/build.log
timeout 420 python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 fp8 w4a8 w4a8-lr32 --reps 10 --out-dir $R/flux > $R/flux.log 2>&1; echo "flux rc=$? at $((SECONDS-t0))s"
[[ -f $R/flux/bench_pipeline.md ]] && cat $R/flux/bench_pipeline.md
cat > $R/sk.py <<'PY'
import torch, qengine
from qengine import _extension
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack
ext = _extension.load_extension()
d = "cuda"
a = torch.randint(-127, 128, (64, 3072), device=d, dtype=torch.int8)
w = prepack(pack_int4(torch.randint(-8, 8, (3072, 3072), device=d, dtype=torch.int8)))
s_a = torch.rand(64, device=d); s_w = torch.rand(3072, 1, device=d)
for cfg in ("sm90_128x64x128_coop_streamk", "sm90_128x128x128_coop", "sm90_64x64x128_pingpong"):
    for _ in range(3):
        ext.w4a8_gemm_with_config(a, s_a, w, s_w, None, None, None, "bfloat16", cfg)
torch.cuda.synchronize()
PY
timeout $((590 - SECONDS)) ncu --clock-control none --kernel-name regex:device_kernel --launch-count 9 --section SpeedOfLight --section LaunchStats --section Occupancy --csv python3 $R/sk.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$? at $((SECONDS-t0))s"
python3 - <<'PY'
import csv
rows = list(csv.DictReader(open("/tmp/r3/ncu.csv"))) if open("/tmp/r3/ncu.csv").read(1) else []
for r in rows:
    if r.get("Metric Name") in ("Duration", "Grid Size", "Registers Per Thread", "Memory Throughput", "Compute (SM) Throughput"):
        print(r["ID"], r["Kernel Name"][:60], r["Metric Name"], r["Metric Value"], r["Metric Unit"])
PY
tar -C /tmp --exclude=r3/gc -cJf $OUT/r3.tar.xz r3
