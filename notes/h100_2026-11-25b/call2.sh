#!/usr/bin/env bash
# Session 27 call 2: pass 2 of the tile kernel now walks its slots last to first (call 1: 1-3% at
# 4608 tokens); launch-shape variants of the tile kernel (QENGINE_QLR_CFG: 8 warps per 16-row tile,
# fewer slots in flight) for the two-pass and the given-absmax one-pass kernels; the FLUX step
# with the new gelu-cat path and, in a second process, the previous one (QENGINE_GELU_CAT_TWO_PASS).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/b2; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 300 tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -6
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_lowrank_kernels.py tests/gpu/test_lowrank_cat_kernels.py > $R/tests_q.log 2>&1; echo "quantize tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_q.log | tail -6
timeout 100 python3 notes/h100_2026-11-25b/qlr_time.py --formats int8 --out $R/qlr.json > $R/qlr.log 2>&1; echo "qlr rc=$? at $((SECONDS-t0))s"; tail -9 $R/qlr.log
timeout 150 python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 w4a8-lr32 --reps 20 --out-dir $R/pipe_new > $R/pipe_new.log 2>&1; echo "pipeline (new) rc=$? at $((SECONDS-t0))s"
left=$((585 - SECONDS + t0))
QENGINE_GELU_CAT_TWO_PASS=1 timeout $left python3 benchmarks/bench_pipeline.py --models flux1-dev --modes w4a8-lr32 --reps 20 --out-dir $R/pipe_old > $R/pipe_old.log 2>&1; echo "pipeline (two-pass) rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe_*/ref_*.pt
for d in pipe_new pipe_old; do [[ -f $R/$d/bench_pipeline.md ]] && cut -d'|' -f2-5,12 $R/$d/bench_pipeline.md | tail -n +3; done
tar -C /tmp --exclude=b2/gc -cJf $OUT/b2.tar.xz b2
