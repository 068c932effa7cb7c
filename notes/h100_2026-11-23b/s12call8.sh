#!/usr/bin/env bash
# Session 12 call 8: SD1.5 (512x512) UNet step with the attention projections fused, qengine FP8
# against bf16 run the same way (whole UNet compiled as one graph, one CUDA graph per step), plus
# the graphed eager modes; the build carried from call 5 (csrc unchanged since).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r8; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|installed|error" $R/build.log | head -3
timeout $((470 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sd15 --compile-scope model --reps 20 --mode-timeout 150 --out-dir $R/sd15 \
  --modes bf16 fp8-qkv+graph bf16-qkv+graph fp8-qkv+compile+graph bf16-qkv+compile+graph > $R/sd15.log 2>&1; echo "sd15 rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sd15.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
rm -rf $R/gc/so $R/sd15/ref_*.pt; tar -C /tmp -cJf $OUT/s12call8.tar.xz r8
