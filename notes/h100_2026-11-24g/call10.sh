#!/usr/bin/env bash
# Session 25 call 10: the read-through's code (the clustered 128x128 config removed, comments):
# build (call 6's objects carried: the W4A8 ones recompile), the W4A8 kernel tests, the W4A8 table.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e10; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 400 tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -5
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests_w4a8.log 2>&1; echo "w4a8 tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_w4a8.log | tail -8
timeout 60 python3 benchmarks/bench_w4a8.py --no-m-sweep --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && grep flux1-dev $R/w4a8/bench_w4a8.md | cut -d'|' -f2,3,5,7,8,9,10,16
tar -C /tmp --exclude=e10/gc -cJf $OUT/e10.tar.xz e10
