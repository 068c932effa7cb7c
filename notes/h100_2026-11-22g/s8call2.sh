#!/usr/bin/env bash
# Session 8 call 2: the refitted conv heuristic + interleaved benchmarks: build, tests, tables.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$OUT tools/gpu_check.sh build pack 2>&1 | tail -2
mkdir -p /tmp/r
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > /tmp/r/smi_start.csv
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/gpu > /tmp/r/gpu_tests.log 2>&1; echo "tests rc=$?"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/gpu_tests.log | tail -8
timeout 120 python3 benchmarks/bench_conv.py --reps 20 --no-plot --out-dir /tmp/r/conv > /tmp/r/bench_conv.log 2>&1; echo "bench_conv rc=$?"
timeout 60 python3 benchmarks/bench_conv.py --models sdxl --only 'sdxl:64x64x640->640 k3s1' 'sdxl:32x32x1280->1280 k3s1' --batch 1 2 --reps 20 --no-plot --out-dir /tmp/r/conv_bar > /tmp/r/bench_conv_bar.log 2>&1; echo "bench_conv bar rc=$?"
timeout 200 python3 benchmarks/bench_gemm.py --models flux1-dev --reps 15 --out-dir /tmp/r/gemm_flux > /tmp/r/bench_gemm_flux.log 2>&1; echo "bench_gemm flux rc=$?"
timeout 100 python3 benchmarks/bench_gemm.py --models sdxl sd1.5 --rank 0 --reps 10 --out-dir /tmp/r/gemm_thin > /tmp/r/bench_gemm_thin.log 2>&1; echo "bench_gemm thin rc=$?"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > /tmp/r/smi_end.csv
grep -E "1280->1280 k3s1|640->640 k3s1" /tmp/r/bench_conv_bar.log
python3 - <<'PY'
import json
try:
    d = json.load(open('/tmp/r/gemm_flux/bench_gemm.json'))
    rows = d['rows'] if isinstance(d, dict) else d
    for r in rows:
        if r['M'] >= 4096:
            print({k: r.get(k) for k in ('M', 'K', 'N', 'l2_rotation_x')}, {k: v for k, v in r.items() if 'vs' in k and isinstance(v, float)})
except Exception as e:
    print('no gemm json', e)
PY
tar -C /tmp -cJf $OUT/s8call2.tar.xz r
