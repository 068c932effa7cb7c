#!/usr/bin/env bash
# Session 21 call 7 (the committed code, .so of call 5 carried): ncu kernel times of the W4A8 GEMM
# without and with the rank-32 branch on the six FLUX image-stream shapes, two rounds each, to
# state the kernel's overhead per shape next to bench_w4a8.py's noisier column.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/c7; mkdir -p $R
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; grep "build:" $R/build.log | head -2
timeout 300 ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 12 --launch-count 24 --metrics gpu__time_duration.sum --csv python3 notes/h100_2026-11-24c/ncu_six.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$?"
python3 - $R/ncu.csv <<'PY'
import csv, sys
lines = open(sys.argv[1]).read().splitlines()
h = next(i for i, l in enumerate(lines) if l.startswith('"ID"'))
t = [float(r["Metric Value"].replace(",", "")) / 1e3 for r in csv.DictReader(lines[h:]) if r["Metric Name"] == "gpu__time_duration.sum"]
shapes = ["4608x3072->3072", "4608x3072->12288", "4608x15360->3072", "4096x3072->3072", "4096x3072->12288", "4096x12288->3072"]
print("| shape | plain us (2 rounds) | r32 us (2 rounds) | overhead (both rounds) |")
for i, s in enumerate(shapes):
    p = [t[2 * i], t[12 + 2 * i]]; l = [t[2 * i + 1], t[12 + 2 * i + 1]]
    print(f"| {s} | {p[0]:.1f} / {p[1]:.1f} | {l[0]:.1f} / {l[1]:.1f} | {(sum(l) / sum(p) - 1) * 100:+.1f}% |")
PY
tar -C /tmp --exclude=c7/gc -cJf $OUT/c7.tar.xz c7
