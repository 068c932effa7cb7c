#!/usr/bin/env bash
# Session 16 call 3: a repeat of call 2 (its ratio, 1.162x, is close to the 1.15x bar). The like-for-like SDXL step against torchao in one
# run (session 14's s14call2.sh, now with the fused resnets of session 15): torchao FP8 (its
# inductor tuning off) and qengine FP8 with static activation scales, both with q/k/v fused, the
# whole UNet compiled and replayed as a CUDA graph; bf16 eager for the ratio column.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r3; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; head -2 $R/build.log
timeout $((595 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 330 --out-dir $R/sdxl \
  --modes bf16 torchao-fp8-notune-qkv+compile+graph fp8-static-qkv+compile+graph > $R/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
grep -E "static scales on|fused" $R/sdxl.log | head -4
[[ -f $R/sdxl/bench_pipeline.md ]] && cat $R/sdxl/bench_pipeline.md
rm -rf $R/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s16call3.tar.xz r3
