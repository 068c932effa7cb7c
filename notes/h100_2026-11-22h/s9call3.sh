#!/usr/bin/env bash
# Session 9 call 3: split-K heuristic refit: GPU suite, conv tables, SD1.5 step with graphs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$?"; tail -1 /tmp/r/build.log
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu > /tmp/r/gpu_tests.log 2>&1; echo "gpu tests rc=$?"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/gpu_tests.log | tail -8
timeout 170 python3 benchmarks/bench_conv.py --reps 20 --no-plot --out-dir /tmp/r/conv > /tmp/r/bench_conv.log 2>&1; echo "bench_conv rc=$?"
timeout 60 python3 benchmarks/bench_conv.py --models sdxl --only 'sdxl:64x64x640->640 k3s1' 'sdxl:32x32x1280->1280 k3s1' --batch 1 2 --reps 20 --no-plot --out-dir /tmp/r/conv_bar > /tmp/r/bench_conv_bar.log 2>&1; echo "bench_conv bar rc=$?"
python3 - <<'PY'
import json
for f in ('/tmp/r/conv/bench_conv.json', '/tmp/r/conv_bar/bench_conv.json'):
    try:
        for r in json.load(open(f))['rows']:
            print(f.split('/')[-2][:8], f"{r['shape'][:32]:32s} b{r['batch']} cudnn {r['cudnn_bf16_us']:7.1f} int8 {r['int8_vs_cudnn']:.2f}/{r['int8_static_vs_cudnn']:.2f} fp8 {r['fp8_vs_cudnn']:.2f}/{r['fp8_static_vs_cudnn']:.2f} kern {r['int8_kernel_us']:6.1f} {r['int8_config']}")
    except Exception as e:
        print(f, e)
PY
timeout 170 python3 benchmarks/bench_pipeline.py --models sd15 --modes bf16+graph fp8+graph --reps 20 --out-dir /tmp/r/sd15 > /tmp/r/sd15.log 2>&1; echo "sd15 rc=$?"; tail -6 /tmp/r/sd15/bench_pipeline.md 2>/dev/null | cut -c1-200
tar -C /tmp -cJf $OUT/s9call3.tar.xz r
