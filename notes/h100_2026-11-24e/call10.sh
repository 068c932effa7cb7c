#!/usr/bin/env bash
# Session 23 call 10 (read-through): the W4A8 binding takes lowrank_act in the dtype the fused
# epilogue reads with one .to() (same behaviour, one tensor instead of two). Kernels carried from
# call 5 (unchanged), the bindings rebuilt; the W4A8, low-rank and gelu-cat kernel tests.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e10; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|compiled" $R/build.log | head -8
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py tests/gpu/test_lowrank_kernels.py tests/gpu/test_gelu_cat_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -8
tar -C /tmp --exclude=e10/gc -cJf $OUT/e10.tar.xz e10
