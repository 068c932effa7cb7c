#!/usr/bin/env bash
# Session 25 call 7: compute-sanitizer memcheck over the W4A8 kernel tests (the clustered tiles, the
# staged node's partial copy pass), without the real-shape, M-sweep and CUDA-graph tests (graph
# capture needs the caching allocator, which memcheck runs without). Call 6's .so (same sources).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e7; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 540 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "not real_shapes and not m_sweep and not graph" > $R/memcheck.log 2>&1; echo "memcheck rc=$? at $((SECONDS-t0))s"
grep -E "ERROR SUMMARY|passed|failed|^FAILED" $R/memcheck.log | tail -8
tar -C /tmp --exclude=e7/gc -cJf $OUT/e7.tar.xz e7
