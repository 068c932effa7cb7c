#!/usr/bin/env bash
# Session 7 call 2: split-K ring mainloop: W4A8 tests, small-M benchmark, FLUX W4A8 step with 4-bit modulation.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$OUT tools/gpu_check.sh build pack 2>&1 | tail -3
mkdir -p /tmp/r
timeout 120 python3 -m pytest -q -p no:cacheprovider --maxfail=15 tests/gpu/test_w4a8_kernels.py > /tmp/r/w4a8_tests.log 2>&1; echo "w4a8 tests rc=$?"
grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/w4a8_tests.log | tail -16
timeout 150 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 1 16 32 48 64 128 --sweep-configs --reps 15 --out-dir /tmp/r/w4a8 > /tmp/r/bench_w4a8.log 2>&1; echo "bench_w4a8 rc=$?"
[[ -f /tmp/r/w4a8/bench_w4a8.md ]] && cut -d'|' -f2-7,10,11,15- /tmp/r/w4a8/bench_w4a8.md
timeout 270 python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 w4a8-lr32 w4a8-lr32-mod --reps 10 --mode-timeout 120 --out-dir /tmp/r/flux > /tmp/r/flux.log 2>&1; echo "flux rc=$?"
rm -f /tmp/r/*/*.pt /tmp/r/*/*.png
grep "^| flux" /tmp/r/flux/bench_pipeline.md
tar -C /tmp -cJf $OUT/s7call2.tar.xz r
