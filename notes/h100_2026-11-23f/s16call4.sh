#!/usr/bin/env bash
# Session 16 call 4: carried build; the static-scale and fused-resnet GPU tests on the final code
# (calibrate_static_scales now keeps scales that are already static).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r4; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; head -2 $R/build.log
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_static_act.py tests/gpu/test_fused_resnet.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -10
tar -C /tmp -cJf $OUT/s16call4.tar.xz r4
