#!/usr/bin/env bash
# Session 21 call 6: the code as committed on main (the .so of call 5 carried, same sources): the
# whole GPU suite, the W4A8 table with the few-token sweep, the sustained-load kernel times, and
# the FLUX.1-dev step (the closing note's commands).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/c6; mkdir -p $R
t0=$SECONDS
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; grep "build:" $R/build.log | head -3
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests_gpu.log 2>&1; echo "gpu tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_gpu.log | tail -15
timeout 100 python3 benchmarks/bench_w4a8.py --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11,13 $R/w4a8/bench_w4a8.md | head -10
timeout 60 python3 notes/h100_2026-11-24c/prof_lowrank.py > $R/prof.log 2>&1; echo "prof rc=$? at $((SECONDS-t0))s"; grep -v -i warn $R/prof.log | tail -4
left=$((585 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 fp8 w4a8 w4a8-lr32 --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cat $R/pipe/bench_pipeline.md
tar -C /tmp --exclude=c6/gc -cJf $OUT/c6.tar.xz c6
