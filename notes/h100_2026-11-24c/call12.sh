#!/usr/bin/env bash
# Session 21 call 12: the binding's product-path fallback reusing the rounded lowrank_act copy
# (bindings rebuilt, kernel objects carried): the W4A8 and low-rank GPU tests.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/c12; mkdir -p $R
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at ${SECONDS}s"; grep -E "build:|error" $R/build.log | head -5
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py tests/gpu/test_lowrank_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at ${SECONDS}s"
grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -8
