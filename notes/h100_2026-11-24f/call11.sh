#!/usr/bin/env bash
# Session 24 call 11, the committed code after the read-through (the W4A8 binding reuses its
# rounded lora_up in the product fallback; the split-K kernel's fragment ownership in one
# lambda): build, the W4A8, low-rank and gelu-cat kernel tests, the few-token table.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e11; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py tests/gpu/test_lowrank_kernels.py tests/gpu/test_gelu_cat_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 100 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,4,6,7,10,11,13,16 $R/w4a8/bench_w4a8.md
tar -C /tmp --exclude=e11/gc -cJf $OUT/e11.tar.xz e11
