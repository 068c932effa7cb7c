#!/usr/bin/env bash
# Session 10 call 6, the committed tree (256-row tiles unsplit only): conv tests, the
# conv benchmark over every SD1.5/SDXL conv, the issue-6 bar shapes, SDXL steps (the rest of the GPU suite ran in call 5; only the conv heuristic changed).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r/build.log
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_conv_kernels.py > /tmp/r/conv_tests.log 2>&1; echo "conv tests rc=$? at $((SECONDS-t0))s"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/conv_tests.log | head -8
timeout 180 python3 benchmarks/bench_conv.py --reps 20 --no-plot --out-dir /tmp/r/conv > /tmp/r/bench_conv.log 2>&1; echo "bench_conv rc=$? at $((SECONDS-t0))s"
timeout 60 python3 benchmarks/bench_conv.py --models sdxl --only 'sdxl:64x64x640->640 k3s1' 'sdxl:32x32x1280->1280 k3s1' --batch 1 2 --reps 20 --no-plot --out-dir /tmp/r/conv_bar > /tmp/r/bench_conv_bar.log 2>&1; echo "bench_conv bar rc=$? at $((SECONDS-t0))s"
python3 - <<'PY'
import json
for f in ('/tmp/r/conv_bar/bench_conv.json',):
    try:
        for r in json.load(open(f))['rows']:
            print(f"{r['shape'][:32]:32s} b{r['batch']} cudnn {r['cudnn_bf16_us']:7.1f} int8 dyn/st {r['int8_vs_cudnn']:.2f}/{r['int8_static_vs_cudnn']:.2f} fp8 {r['fp8_vs_cudnn']:.2f}/{r['fp8_static_vs_cudnn']:.2f} {r['int8_config']}")
    except Exception as e:
        print(f, e)
PY
timeout 100 python3 benchmarks/bench_pipeline.py --models sdxl --modes bf16+graph fp8+graph --reps 20 --out-dir /tmp/r/sdxl > /tmp/r/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"; grep "| sdxl" /tmp/r/sdxl/bench_pipeline.md | cut -c1-120
rm -rf /tmp/r/gc/so /tmp/r/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s10call6.tar.xz r
