#!/usr/bin/env bash
# Session 22 call 4: the two-part row's loads index per-part row starts computed once (call 3's
# select sat inside row * ld, a 64-bit multiply per load: the 4-warp tile kernel read 201.6 us at
# 4608 x 15360 against 183.3 in call 1). Same tests, benchmark, and the FLUX step with FP8 too.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/d4; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_lowrank_kernels.py tests/gpu/test_lowrank_cat_kernels.py tests/gpu/test_geglu_kernels.py tests/gpu/test_layer_norm_quant.py tests/gpu/test_static_act.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 90 python3 benchmarks/bench_gelu_cat.py --formats int8 fp8-cat --out-dir $R/gelu > $R/gelu.log 2>&1; echo "bench_gelu_cat rc=$? at $((SECONDS-t0))s"; tail -9 $R/gelu.log
timeout 220 python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 fp8 fp8-lr32 w4a8 w4a8-lr32 --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cut -d'|' -f2-5,12,15 $R/pipe/bench_pipeline.md || tail -5 $R/pipe.log
left=$((585 - SECONDS + t0))
timeout $left python3 benchmarks/profile_step.py --model flux1-dev --mode w4a8-lr32 --rows 40 > $R/prof_w4a8-lr32.log 2>&1; echo "profile rc=$? at $((SECONDS-t0))s"; head -10 $R/prof_w4a8-lr32.log
tar -C /tmp --exclude=d4/gc -cJf $OUT/d4.tar.xz d4
