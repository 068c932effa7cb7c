#!/usr/bin/env bash
# Session 11 call 9: SDXL UNet step, whole UNet compiled as one graph, each step replayed as one
# CUDA graph: qengine FP8 + compile + graph against bf16 + compile + graph in one run (call 7
# ran out of time before the bf16 row; call 6 had it at 19.3 ms).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r9
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r9/gc tools/gpu_check.sh build > /tmp/r9/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r9/build.log
timeout $((480 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 250 --out-dir /tmp/r9/sdxl \
  --modes bf16 fp8+compile+graph bf16+compile+graph > /tmp/r9/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' /tmp/r9/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:200])"
ls /tmp/r9/sdxl/errors 2>/dev/null && tail -5 /tmp/r9/sdxl/errors/*.log
rm -rf /tmp/r9/gc/so /tmp/r9/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s11call9.tar.xz r9
