#!/usr/bin/env bash
# Session 22 call 6: bench_w4a8.py --sweep-configs now times the forced configs interleaved
# (time_ops); a short run to check it, at 64 and 4096 tokens on FLUX's K/N.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/d6; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
timeout 300 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 64 4096 --sweep-configs --reps 7 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,7,8,9,16- $R/w4a8/bench_w4a8.md || tail -20 $R/bench.log
tar -C /tmp --exclude=d6/gc -cJf $OUT/d6.tar.xz d6
