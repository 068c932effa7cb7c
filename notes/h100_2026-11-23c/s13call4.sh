#!/usr/bin/env bash
# Session 13 call 4: the review's refactors (shared producer binding, RowSource without the gate
# field, the 25 dB UNet bound): build, then the row-kernel GPU tests on the committed tree.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r4; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "compiled|error" $R/build.log | head
timeout $((590 - SECONDS)) python3 -m pytest -q tests/gpu/test_layer_norm_quant.py tests/gpu/test_geglu_kernels.py tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_lowrank_cat_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"; grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -12
tar -C /tmp -cJf $OUT/s13call4.tar.xz r4
