#!/usr/bin/env bash
# Session 14 call 5: SD1.5 (512x512) with static activation scales, where compiled FP8 lost to
# compiled bf16 (0.76x, session 12: 4-40 us layers, a quantize pass each). One run, q/k/v fused,
# whole UNet compiled + CUDA graph. Carried build.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r5; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; head -2 $R/build.log
timeout $((595 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sd15 --compile-scope model --reps 20 --mode-timeout 200 --out-dir $R/sd15 \
  --modes bf16 bf16-qkv+compile+graph fp8-static-qkv+compile+graph fp8-qkv+compile+graph > $R/sd15.log 2>&1; echo "sd15 rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sd15.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
rm -rf $R/sd15/ref_*.pt; tar -C /tmp -cJf $OUT/s14call5.tar.xz r5
