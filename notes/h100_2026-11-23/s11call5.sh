#!/usr/bin/env bash
# Session 11 call 5, the committed tree: the whole GPU test suite; dynamo's graph breaks of the
# SDXL UNet with torchao FP8 weights vs bf16 (ao_explain.py).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r5
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r5/gc tools/gpu_check.sh build > /tmp/r5/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r5/build.log
timeout 330 python3 -m pytest -q -p no:cacheprovider tests/gpu > /tmp/r5/gpu_tests.log 2>&1; echo "gpu tests rc=$? at $((SECONDS-t0))s"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r5/gpu_tests.log | head -12
timeout $((580 - SECONDS)) python3 notes/h100_2026-11-23/ao_explain.py > /tmp/r5/ao_explain.log 2>&1; echo "explain rc=$? at $((SECONDS-t0))s"; grep -v Warning /tmp/r5/ao_explain.log | grep -v '^  """' | tail -22
rm -rf /tmp/r5/gc/so; tar -C /tmp -cJf $OUT/s11call5.tar.xz r5
