#!/usr/bin/env bash
# Session 22 call 7: the gelu-cat GPU tests after folding the branch cases into the existing tests
# (the .so of call 4, same sources).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/d7; mkdir -p $R
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; grep -E "build:|error" $R/build.log | head -5
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gelu_cat_kernels.py > $R/tests.log 2>&1; echo "tests rc=$?"
grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -10
tar -C /tmp --exclude=d7/gc -cJf $OUT/d7.tar.xz d7
