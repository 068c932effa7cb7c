#!/usr/bin/env bash
# Session 21 call 10 (the committed kernels, .so of call 5 carried): bench_w4a8.py with its six ops
# interleaved per shape (time_ops) instead of timed one after the other; the table twice, to see
# whether the low-rank overhead column now holds still between runs (call 9: +-10 points).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/c10; mkdir -p $R
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"
for i in 1 2 3; do
  timeout 150 python3 benchmarks/bench_w4a8.py --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8_$i > $R/bench_$i.log 2>&1; echo "bench $i rc=$? at $SECONDS s"
  cut -d'|' -f2,3,7,8,9,10 $R/w4a8_$i/bench_w4a8.md | sed -n 4,9p
done
tail -3 $R/bench_1.log
tar -C /tmp --exclude=c10/gc -cJf $OUT/c10.tar.xz c10
