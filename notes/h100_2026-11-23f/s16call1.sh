#!/usr/bin/env bash
# Session 16 call 1: a fresh checkout, so a full build (packed for later calls); then the
# fused-resnet GPU tests with the bars rewritten after session 15's call 2 (never run on a GPU
# yet), then the rest of the GPU suite in the time left.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head
mkdir -p $OUT/sobuild; cp $R/gc/so/* $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout 150 python3 -m pytest -q --durations=5 tests/gpu/test_fused_resnet.py > $R/tests_resnet.log 2>&1; echo "resnet tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert|s call" $R/tests_resnet.log | tail -20
timeout $((585 - SECONDS)) python3 -m pytest -q -p no:cacheprovider tests/gpu --ignore=tests/gpu/test_fused_resnet.py > $R/tests_all.log 2>&1; echo "gpu suite rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_all.log | tail -15
rm -rf $R/gc/so; tar -C /tmp -cJf $OUT/s16call1.tar.xz r1
