#!/usr/bin/env bash
# Session 14 call 1: static activation scales. Build (pack for later calls), the static-scale GPU
# tests, and the SDXL FP8 step (compiled whole-model, CUDA graph, fused q/k/v) with static scales
# against the default dynamic ones, in one run.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head
cp $R/gc/so/* $OUT/ 2>/dev/null
timeout 100 python3 -m pytest -q tests/gpu/test_static_act.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"; grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout $((590 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 200 --out-dir $R/sdxl \
  --modes fp8-static-qkv+compile+graph fp8-qkv+compile+graph > $R/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
grep -E "static scales on|Error|error" $R/sdxl.log | head -5
rm -rf $R/gc/so $R/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s14call1.tar.xz r1
