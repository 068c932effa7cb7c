#!/usr/bin/env bash
# Session 23 call 4 (call 1's .so): every W4A8 tile config forced at the model shapes, now that
# the widening is 5 ops per 8 values: do the ping-pong configs (epilogue overlapped with the
# other warp group's mainloop) beat the 128x256 cooperative one at large M?
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e4; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
timeout 300 python3 benchmarks/bench_w4a8.py --no-m-sweep --sweep-configs --reps 10 --out-dir $R/sweep > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
ls $R/sweep; for f in $R/sweep/*.md; do echo "== $f"; cat $f; done | cut -c1-220
tar -C /tmp --exclude=e4/gc -cJf $OUT/e4.tar.xz e4
