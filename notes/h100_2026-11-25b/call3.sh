#!/usr/bin/env bash
# Session 27 call 3, the committed code (experiment switches removed): the quantize / gelu-cat /
# low-rank kernel tests and the W4A8 kernel tests; bench_gelu_cat; the tile kernel alone
# (qlr_time.py, variant 0 only); the FLUX.1-dev step (bf16, W4A8 with and without the branch,
# FP8 + branch), 20 reps.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/b3; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 300 tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -6
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_lowrank_kernels.py tests/gpu/test_lowrank_cat_kernels.py tests/gpu/test_w4a8_kernels.py -k "not real_shapes and not m_sweep" > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -6
timeout 60 python3 benchmarks/bench_gelu_cat.py --formats int8 fp8 fp8-cat --reps 15 --out-dir $R/gelu > $R/gelu.log 2>&1; echo "gelu-cat bench rc=$? at $((SECONDS-t0))s"
cat $R/gelu/*.md 2>/dev/null | tail -9
timeout 60 python3 notes/h100_2026-11-25b/qlr_time.py --formats int8 --variants 0 --out $R/qlr.json > $R/qlr.log 2>&1; echo "qlr rc=$? at $((SECONDS-t0))s"; tail -8 $R/qlr.log
left=$((585 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 w4a8 w4a8-lr32 w4a8-lr32-qkv fp8-lr32 --reps 20 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cut -d'|' -f2-5,12,13,15 $R/pipe/bench_pipeline.md | tail -n +3
tar -C /tmp --exclude=b3/gc -cJf $OUT/b3.tar.xz b3
