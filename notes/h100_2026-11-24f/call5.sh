#!/usr/bin/env bash
# Session 24 call 5, the committed code (call 3's .so: same sources): the whole GPU suite, then
# memcheck over the W4A8 kernel tests (without the real-shape, M-sweep and CUDA-graph ones), which
# cover the split-K kernel's split cluster barriers.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e5; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
timeout 380 python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests_gpu.log 2>&1; echo "gpu tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_gpu.log | tail -10
left=$((585 - SECONDS + t0))
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout $left compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "not real_shapes and not m_sweep and not graph" > $R/memcheck.log 2>&1; echo "memcheck rc=$? at $((SECONDS-t0))s"
grep -E "ERROR SUMMARY|passed|failed|^FAILED" $R/memcheck.log | tail -8
tar -C /tmp --exclude=e5/gc -cJf $OUT/e5.tar.xz e5
