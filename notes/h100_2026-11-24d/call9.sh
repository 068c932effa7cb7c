#!/usr/bin/env bash
# Session 22 call 9 (branch wip/lowrank16, the .so of call 8, same sources): QLinear asks for
# 16-bit lowrank_act only above 32 tokens (the split-K configs read fp32). The whole GPU suite, and
# the W4A8 table.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/d9; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
timeout 330 python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests_gpu.log 2>&1; echo "gpu tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_gpu.log | tail -10
timeout 120 python3 benchmarks/bench_w4a8.py --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11 $R/w4a8/bench_w4a8.md | head -40
tar -C /tmp --exclude=d9/gc -cJf $OUT/d9.tar.xz d9
