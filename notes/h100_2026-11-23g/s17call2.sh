#!/usr/bin/env bash
# Session 17 call 2: the heuristic fitted to call 1's sweep (stream-K for 17..64 tokens on the
# larger FLUX layers, 128x256 tiles for many tokens). Build (only configs.cu and the bindings
# change; the warm machine's /tmp/qe-build keeps call 1's objects), the whole GPU suite, then the
# W4A8 table with the heuristic: FLUX/SD3 layer shapes, the few-token sweep and the modulation GEMVs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r2; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|error|compiled csrc" $R/build.log | head -12
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null
timeout 230 python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests_all.log 2>&1; echo "gpu suite rc=$? at $((SECONDS-t0))s"
grep -E "^FAILED|^ERROR|passed|failed" $R/tests_all.log | tail -12
timeout $((585 - SECONDS)) python3 benchmarks/bench_w4a8.py --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8 > $R/bench_w4a8.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
tar -C /tmp --exclude=r2/gc -cJf $OUT/r2.tar.xz r2
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2-14 $R/w4a8/bench_w4a8.md
