#!/usr/bin/env bash
# Session 26 call 1 (branch wip/epi64): 64-token epilogue subtiles for the 128x256 clustered and
# the 128x128 cooperative W4A8 tiles (4 subtiles of 128x64 instead of 8 of 128x32 per 128x256
# tile: half the barriers and TMA stores). Build (session 25's objects carried: the W4A8 TUs
# recompile), pack; the cooperative/clustered/staged tests; every config forced at the FLUX
# shapes, with and without r32.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 400 tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 90 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "clustered or coop or staged" > $R/tests.log 2>&1; rc=$?; echo "tests rc=$rc at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -8
if [[ $rc == 0 ]]; then
  left=$((575 - SECONDS + t0))
  timeout $left python3 benchmarks/bench_w4a8.py --no-m-sweep --sweep-configs --reps 10 --time-budget $((left - 45)) --out-dir $R/sweep > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
  [[ -f $R/sweep/bench_w4a8.json ]] && python3 notes/h100_2026-11-25/config_table.py $R/sweep/bench_w4a8.json \
    128x128x128_coop 128x128x128_coop_e64 128x256x128_coop_c2x1 128x256x128_coop_c2x1_e64 128x224x128_coop_c2x1
fi
tar -C /tmp --exclude=e1/gc/so -cJf $OUT/e1.tar.xz e1
