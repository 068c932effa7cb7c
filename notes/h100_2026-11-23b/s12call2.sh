#!/usr/bin/env bash
# Session 12 call 2: like-for-like baselines of call 1 (bf16 and torchao, fused and unfused), carried build.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r2; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|installed" $R/build.log
timeout $((585 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 280 --out-dir $R/sdxl \
  --modes bf16 bf16+compile+graph bf16-qkv+compile+graph torchao-fp8-notune-qkv+compile+graph > $R/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
ls $R/sdxl/errors 2>/dev/null && tail -5 $R/sdxl/errors/*.log
rm -rf $R/gc/so $R/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s12call2.tar.xz r2
