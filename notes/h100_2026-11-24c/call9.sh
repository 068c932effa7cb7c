#!/usr/bin/env bash
# Session 21 call 9 (the committed code, .so of call 5 carried; measurement only): why
# bench_w4a8.py's plain W4A8 column moves by up to 8% between identical builds. The table three
# times in a row (FLUX/SD3 shapes, no M sweep) with the SM clock, power and temperature logged
# every 100 ms.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/c9; mkdir -p $R
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"
nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 100 > $R/smi.csv 2>&1 &
SMI=$!
for i in 1 2 3; do
  timeout 120 python3 benchmarks/bench_w4a8.py --no-m-sweep --reps 15 --out-dir $R/w4a8_$i > $R/bench_$i.log 2>&1; echo "bench $i rc=$? at $SECONDS s"
  cut -d'|' -f2,7,8,9 $R/w4a8_$i/bench_w4a8.md | sed -n 4,9p
done
kill $SMI
python3 - $R/smi.csv <<'PY'
import csv, sys, statistics
rows = list(csv.reader(open(sys.argv[1])))[1:]
clk = [float(r[1].split()[0]) for r in rows if len(r) > 4 and r[1].strip()[0].isdigit()]
pw = [float(r[3].split()[0]) for r in rows if len(r) > 4 and r[3].strip()[0].isdigit()]
print(f"samples {len(clk)}; SM clock MHz min {min(clk):.0f} median {statistics.median(clk):.0f} max {max(clk):.0f}; power W median {statistics.median(pw):.0f} max {max(pw):.0f}")
reasons = {}
for r in rows:
    if len(r) > 5: reasons[r[5].strip()] = reasons.get(r[5].strip(), 0) + 1
print("throttle reasons:", reasons)
PY
tar -C /tmp --exclude=c9/gc -cJf $OUT/c9.tar.xz c9
