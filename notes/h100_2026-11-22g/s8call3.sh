#!/usr/bin/env bash
# Session 8 call 3 (review): bench_conv's rotation sized by its smallest op; re-measure the conv tables.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$OUT tools/gpu_check.sh build 2>&1 | tail -2
mkdir -p /tmp/r
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_conv_kernels.py > /tmp/r/conv_tests.log 2>&1; echo "conv tests rc=$?"; tail -1 /tmp/r/conv_tests.log
timeout 200 python3 benchmarks/bench_conv.py --reps 20 --no-plot --out-dir /tmp/r/conv > /tmp/r/bench_conv.log 2>&1; echo "bench_conv rc=$?"
timeout 90 python3 benchmarks/bench_conv.py --models sdxl --only 'sdxl:64x64x640->640 k3s1' 'sdxl:32x32x1280->1280 k3s1' --batch 1 2 --reps 20 --no-plot --out-dir /tmp/r/conv_bar > /tmp/r/bench_conv_bar.log 2>&1; echo "bench_conv bar rc=$?"
grep -E "1280->1280 k3s1|640->640 k3s1" /tmp/r/bench_conv.log /tmp/r/bench_conv_bar.log | cut -c1-330
python3 - <<'PY'
import json
for f in ('/tmp/r/conv/bench_conv.json', '/tmp/r/conv_bar/bench_conv.json'):
    try:
        for r in json.load(open(f))['rows']:
            if r['shape'] in ('sdxl:64x64x640->640 k3s1', 'sdxl:32x32x1280->1280 k3s1', 'sdxl:128x128x640->640 k3s1', 'sdxl:64x64x1280->1280 k3s1', 'sdxl:128x128x320->320 k3s1'):
                print(f.split('/')[-2], r['shape'], r['batch'], r['cudnn_bf16_us'], r['int8_vs_cudnn'], r['int8_static_vs_cudnn'], r['fp8_vs_cudnn'], r['fp8_static_vs_cudnn'], r['int8_config'], r['rotation_sets'], r['l2_rotation_x'])
    except Exception as e:
        print(f, e)
PY
tar -C /tmp -cJf $OUT/s8call3.tar.xz r
