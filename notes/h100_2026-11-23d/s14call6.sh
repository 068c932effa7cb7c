#!/usr/bin/env bash
# Session 14 call 6: the static-scale GPU tests on the final code (INT8 linears opt-in since 9e93ccd).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r6/gc tools/gpu_check.sh build 2>&1 | head -2
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_static_act.py tests/gpu/test_geglu_kernels.py tests/gpu/test_layer_norm_quant.py 2>&1 | grep -E "passed|failed|FAILED|Error" | tail -8
