#!/usr/bin/env bash
# Session 25 call 8: the 128x256 and 128x224 cooperative W4A8 tiles in clusters of four row tiles
# (each activation tile read from L2 once per four). Build (call 6's objects carried),
# pack; the clustered/cooperative tests; every config forced at the FLUX/SD3 shapes, with and
# without r32.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e8; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 480 tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "clustered or coop or staged or output_dtype" > $R/tests_c4.log 2>&1; rc=$?; echo "cluster tests rc=$rc at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests_c4.log | tail -8
if [[ $rc == 0 ]]; then
  left=$((570 - SECONDS + t0))
  timeout $left python3 benchmarks/bench_w4a8.py --no-m-sweep --sweep-configs --reps 10 --time-budget $((left - 60)) --out-dir $R/sweep > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
  [[ -f $R/sweep/bench_w4a8.md ]] && python3 notes/h100_2026-11-24g/cluster_table.py $R/sweep/bench_w4a8.json
fi
tar -C /tmp --exclude=e8/gc/so -cJf $OUT/e8.tar.xz e8
