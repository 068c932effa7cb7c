#!/usr/bin/env bash
# Session 19 call 7: the read-through tidy (the m16n8 fragment helpers back inside the W8A8 node,
# their one user; one chunk-index helper and subtile-relative coordinates in the staged W4A8 node;
# no intended change in behaviour): build, the low-rank / W8A8 / W4A8 GPU tests, the W4A8 table.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r7; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|error" $R/build.log | head -20
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_lowrank_kernels.py tests/gpu/test_w8a8_kernels.py tests/gpu/test_w4a8_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 40 python3 benchmarks/bench_w4a8.py --no-m-sweep --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,7,8,9,10 $R/w4a8/bench_w4a8.md | head -12
tar -C /tmp --exclude=r7/gc -cJf $OUT/r7.tar.xz r7
