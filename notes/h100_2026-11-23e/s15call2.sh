#!/usr/bin/env bash
# Session 15 call 2: carried build of call 1; the fused-resnet, norm and static GPU tests; the SDXL
# FP8 static step with the fused resnets against the same without them (-nores), in one run.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r2; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; head -2 $R/build.log
timeout 200 python3 -m pytest -q --durations=3 tests/gpu/test_fused_resnet.py tests/gpu/test_fused_norms.py tests/gpu/test_static_act.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert|s call" $R/tests.log | tail -20
timeout $((595 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 200 --out-dir $R/sdxl \
  --modes fp8-static-qkv+compile+graph fp8-nores-static-qkv+compile+graph > $R/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
grep -E "static scales on|Error" $R/sdxl.log | head -4
rm -rf $R/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s15call2.tar.xz r2
