#!/usr/bin/env bash
# Session 14 call 4: the whole GPU test suite on the final code (carried build: no CUDA source
# changed this session; the Python side of QLinear, calibration and the benchmarks did).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r4; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; head -2 $R/build.log
timeout $((585 - SECONDS)) python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -15
tar -C /tmp -cJf $OUT/s14call4.tar.xz r4
