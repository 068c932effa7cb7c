#!/usr/bin/env bash
# Session 25 call 6: the heuristic with the clustered 128x224 tile for 4608 tokens at short K.
# Build (call 5's objects carried: configs.cu and the bindings recompile), pack; the whole GPU
# suite; the W4A8 table (the command of session 24 call 8); the FLUX.1-dev step (5 modes).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e6; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 300 tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 270 python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests_gpu.log 2>&1; echo "gpu tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_gpu.log | tail -8
timeout 120 python3 benchmarks/bench_w4a8.py --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11,16 $R/w4a8/bench_w4a8.md
left=$((585 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 fp8 fp8-lr32 w4a8 w4a8-lr32 --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cut -d'|' -f2-5,12,15 $R/pipe/bench_pipeline.md || tail -5 $R/pipe.log
tar -C /tmp --exclude=e6/gc -cJf $OUT/e6.tar.xz e6
