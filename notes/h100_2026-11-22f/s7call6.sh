#!/usr/bin/env bash
# Session 7 call 6: final heuristic: GPU suite, W4A8 table (FLUX/SD3 + small-M sweep), FLUX W4A8 steps.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$OUT tools/gpu_check.sh build pack 2>&1 | tail -3
mkdir -p /tmp/r
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu > /tmp/r/gpu_tests.log 2>&1; echo "tests rc=$?"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/gpu_tests.log | tail -8
timeout 130 python3 benchmarks/bench_w4a8.py --m-sweep 1 16 32 64 --reps 15 --out-dir /tmp/r/w4a8 > /tmp/r/bench_w4a8.log 2>&1; echo "bench_w4a8 rc=$?"
[[ -f /tmp/r/w4a8/bench_w4a8.md ]] && cut -d'|' -f2-12,15 /tmp/r/w4a8/bench_w4a8.md
timeout 250 python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 w4a8-lr32 w4a8-lr32-mod --reps 10 --mode-timeout 100 --out-dir /tmp/r/flux > /tmp/r/flux.log 2>&1; echo "flux rc=$?"
rm -f /tmp/r/*/*.pt /tmp/r/*/*.png
grep "^| flux" /tmp/r/flux/bench_pipeline.md
tar -C /tmp -cJf $OUT/s7call6.tar.xz r
