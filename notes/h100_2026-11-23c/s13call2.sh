#!/usr/bin/env bash
# Session 13 call 2: LayerNorm folded into the QLinears + GEGLU: build (pack), the quantize and
# norm GPU tests (the row kernel refactor included), and the SDXL FP8 step with and without them.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r2; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head
cp $R/gc/so/* $OUT/ 2>/dev/null
timeout 130 python3 -m pytest -q tests/gpu/test_layer_norm_quant.py tests/gpu/test_geglu_kernels.py tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_lowrank_cat_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"; grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -12
timeout $((590 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 230 --out-dir $R/sdxl \
  --modes fp8-qkv+compile+graph fp8-nofold-qkv+compile+graph > $R/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
grep '^{' $R/sdxl.log | python3 -c "
import json,sys
for l in sys.stdin:
    r=json.loads(l); print(r['mode'], r.get('ms_median'), r.get('ms_min'), r.get('warmup_s'), r.get('sqnr_db_vs_bf16'), r.get('error','')[:300])"
rm -rf $R/gc/so $R/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s13call2.tar.xz r2
