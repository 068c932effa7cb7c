#!/usr/bin/env bash
# Session 9 call 6 (review): tile count from the problem shape: conv GPU tests.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$?"; tail -1 /tmp/r/build.log
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_conv_kernels.py > /tmp/r/conv_tests.log 2>&1; echo "conv tests rc=$?"; tail -1 /tmp/r/conv_tests.log
python3 -c "
import torch, qengine; from qengine import _extension; e=_extension.load_extension()
for m,n,k in [(1024,1280,11520),(1024,640,5760),(256,1280,11520),(64,1280,11520),(128,1280,11520),(512,1280,23040),(2048,1280,11520)]:
    print(m,n,k,e.conv_heuristic(m,n,k,'int8'))"
cp /tmp/r/conv_tests.log $OUT/
