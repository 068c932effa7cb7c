#!/usr/bin/env bash
# Session 26 call 4: the SD3-medium W4A8 + low-rank 32 step (compiled, CUDA graph), unfused and
# fused, which call 3 ran out of time for (its build: the same carried kernel objects).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e4; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 300 tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -6; grep -c "qengine: compiled" $R/gc/build.log
left=$((400 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models sd3-medium --modes bf16 w4a8-lr32-qkv+compile+graph w4a8-lr32+compile+graph --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cut -d'|' -f2-5,12,15,16 $R/pipe/bench_pipeline.md || grep ms_median $R/pipe.log | cut -c1-200
tar -C /tmp --exclude=e4/gc -cJf $OUT/e4.tar.xz e4
