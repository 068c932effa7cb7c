#!/usr/bin/env bash
# Session 17 call 7: the final code (df3b34f: the configs as one TileConfig template, kernel
# symbols unchanged): build, the W4A8 GPU tests, and the W4A8 table with the heuristic.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r7; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "error" $R/build.log | head -5
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests_w4a8.log 2>&1; echo "w4a8 tests rc=$? at $((SECONDS-t0))s"
grep -E "^FAILED|^ERROR|passed|failed" $R/tests_w4a8.log | tail -5
timeout 60 python3 benchmarks/bench_w4a8.py --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11 $R/w4a8/bench_w4a8.md | head -24
tar -C /tmp --exclude=r7/gc -cJf $OUT/r7.tar.xz r7
