#!/usr/bin/env bash
# Session 12 call 7: torchao FP8 (fused q/k/v) against qengine FP8 run the same way, in one run (call 5
# ran out of time before the torchao row); the build carried from call 5.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r7; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head
timeout $((590 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 300 --out-dir $R/sdxl \
  --modes bf16 torchao-fp8-notune-qkv+compile+graph fp8-qkv+compile+graph > $R/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
rm -rf $R/gc/so $R/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s12call7.tar.xz r7
