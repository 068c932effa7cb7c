#!/usr/bin/env bash
# Session 11 call 7: SDXL UNet step, whole UNet compiled as one graph, each step replayed as one
# CUDA graph: qengine FP8 + compile + graph (inductor fuses the glue around our ops) against
# torchao FP8 and bf16 + compile + graph (call 6: 20.9 and 19.3 ms; qengine FP8 + graph 23.9).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r7
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r7/gc tools/gpu_check.sh build > /tmp/r7/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r7/build.log
timeout $((575 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 330 --out-dir /tmp/r7/sdxl \
  --modes bf16 fp8+compile+graph torchao-fp8-notune+compile+graph bf16+compile+graph > /tmp/r7/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' /tmp/r7/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:200])"
ls /tmp/r7/sdxl/errors 2>/dev/null && tail -5 /tmp/r7/sdxl/errors/*.log
rm -rf /tmp/r7/gc/so /tmp/r7/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s11call7.tar.xz r7
