#!/usr/bin/env bash
# Session 22 call 5: the code as committed (the .so of call 4, same sources): the whole GPU suite,
# and compute-sanitizer memcheck over the tests of the two-part row and the 8-warp blocks.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/d5; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
timeout 330 python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests_gpu.log 2>&1; echo "gpu tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_gpu.log | tail -10
left=$((580 - SECONDS + t0))
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout $left compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_lowrank_kernels.py -k "(lowrank_equals or lowrank_cat_equals or other_ranks or quantize_lowrank) and not 12288 and not 15360" > $R/sanitizer.log 2>&1; echo "sanitizer rc=$? at $((SECONDS-t0))s"
grep -E "ERROR SUMMARY|passed|failed" $R/sanitizer.log | tail -4
tar -C /tmp --exclude=d5/gc -cJf $OUT/d5.tar.xz d5
