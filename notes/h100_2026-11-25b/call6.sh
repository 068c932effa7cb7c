#!/usr/bin/env bash
# Session 27 call 6 (read-through): ExactDiv::exact_for names the range where the exact division
# holds (it was spelled out in six places of the quantize kernels); build, the tests of every
# kernel that uses it (quantize, gelu-cat, low-rank, LayerNorm + quantize, GEGLU, static act).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/b6; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 300 tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -4
timeout 400 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w8a8_kernels.py tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_lowrank_kernels.py tests/gpu/test_lowrank_cat_kernels.py tests/gpu/test_layer_norm_quant.py tests/gpu/test_geglu_kernels.py tests/gpu/test_static_act.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -6
tar -C /tmp --exclude=b6/gc -cJf $OUT/b6.tar.xz b6
