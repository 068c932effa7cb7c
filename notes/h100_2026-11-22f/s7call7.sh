#!/usr/bin/env bash
# Session 7 call 7 (review): W4A8 tests + small-M table on the committed review mends.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$OUT tools/gpu_check.sh build 2>&1 | tail -2
mkdir -p /tmp/r
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu > /tmp/r/gpu_tests.log 2>&1; echo "tests rc=$?"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/gpu_tests.log | tail -6
timeout 120 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 1 16 32 64 --reps 15 --out-dir /tmp/r/w4a8 > /tmp/r/bench_w4a8.log 2>&1; echo "bench_w4a8 rc=$?"
[[ -f /tmp/r/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,4,6,7,11,15 /tmp/r/w4a8/bench_w4a8.md
tar -C /tmp -cJf $OUT/s7call7.tar.xz r
