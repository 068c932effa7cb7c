#!/usr/bin/env bash
# Session 21 call 11 (measurement only): sustained SM clock and power per GEMM op at FLUX
# 4608x3072->12288 (power_per_op.py), to test whether W4A8 loses more clock at the power cap
# than INT8 and bf16 (call 10: interleaved, W4A8 read 0.85x INT8 here).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
ARCHS=90a OUT=/tmp/c11/gc tools/gpu_check.sh build > /tmp/build.log 2>&1; echo "build rc=$?"
timeout 120 python3 notes/h100_2026-11-24c/power_per_op.py 2>&1 | grep -v -i warn
