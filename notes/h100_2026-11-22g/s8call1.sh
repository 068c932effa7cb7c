#!/usr/bin/env bash
# Session 8 call 1: conv cluster configs + W4A8 32-token split-K configs: build, tests, sweeps.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$OUT tools/gpu_check.sh build pack 2>&1 | tail -2
mkdir -p /tmp/r
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/gpu > /tmp/r/gpu_tests.log 2>&1; echo "tests rc=$?"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/gpu_tests.log | tail -8
timeout 150 python3 benchmarks/bench_conv.py --models sdxl --only k3s1 --sweep-configs --reps 15 --no-plot --out-dir /tmp/r/conv > /tmp/r/bench_conv.log 2>&1; echo "bench_conv rc=$?"
timeout 60 python3 benchmarks/bench_conv.py --models sdxl --only 'sdxl:64x64x640->640 k3s1' 'sdxl:32x32x1280->1280 k3s1' --batch 2 --sweep-configs --reps 15 --no-plot --out-dir /tmp/r/conv_b2 > /tmp/r/bench_conv_b2.log 2>&1; echo "bench_conv b2 rc=$?"
timeout 120 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 1 16 32 48 64 --sweep-configs --reps 15 --out-dir /tmp/r/w4a8 > /tmp/r/bench_w4a8.log 2>&1; echo "bench_w4a8 rc=$?"
python3 - <<'PY'
import json, glob
for f in sorted(glob.glob('/tmp/r/conv*/bench_conv.json')):
    rows = json.load(open(f))["rows"]
    for r in rows:
        sw = {k[k.index('[')+1:-1].replace('sm90_',''): v for k, v in r.items() if k.startswith('int8_static_us[')}
        print(r['shape'], r['batch'], 'cudnn', r['cudnn_bf16_us'], 'heur', r.get('int8_config'), 'i8 static/cudnn', r.get('int8_static_vs_cudnn'), sw)
PY
[[ -f /tmp/r/w4a8/bench_w4a8.md ]] && cat /tmp/r/w4a8/bench_w4a8.md | cut -c1-400
tar -C /tmp -cJf $OUT/s8call1.tar.xz r
