#!/usr/bin/env bash
# Session 11 call 6: SDXL UNet step, whole UNet compiled as one graph, each step replayed as one
# CUDA graph (+compile+graph): does torchao FP8 + compile lose to bf16 + compile (call 3: 92.4 vs
# 29.0 ms) on the host or on the GPU?
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r6
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r6/gc tools/gpu_check.sh build > /tmp/r6/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r6/build.log
timeout $((575 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 330 --out-dir /tmp/r6/sdxl \
  --modes bf16 torchao-fp8-notune+compile+graph fp8+graph bf16+compile+graph > /tmp/r6/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' /tmp/r6/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:200])"
ls /tmp/r6/sdxl/errors 2>/dev/null && tail -5 /tmp/r6/sdxl/errors/*.log
rm -rf /tmp/r6/gc/so /tmp/r6/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s11call6.tar.xz r6
