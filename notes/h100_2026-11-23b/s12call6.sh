#!/usr/bin/env bash
# Session 12 call 6: the whole GPU suite on the committed tree (the 64x160 config forced on every
# shape, fused q/k/v layers), then SDXL fp8-qkv with the activation quantization traced as torch
# ops for inductor to fuse into its producers (--compiled-quantize inductor) against the default.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r6; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build test > $R/gc.log 2>&1; echo "build+test rc=$? at $((SECONDS-t0))s"; grep -E "build|tests rc|passed|failed" $R/gc.log | tail -5
timeout $((590 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 220 --out-dir $R/sdxl \
  --compiled-quantize inductor --modes bf16 fp8-qkv+compile+graph > $R/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
rm -rf $R/gc/so $R/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s12call6.tar.xz r6
