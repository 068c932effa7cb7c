#!/usr/bin/env bash
# Session 21 call 3 (same code as call 2; its .so carried): per-SASS-instruction ncu view of the
# staged kernel vs the plain one at 4608x3072->12288 and 4096x3072->3072 (instructions executed
# and stall samples per instruction), to see where the remaining overhead sits: how often begin()'s
# synchronous copies run (a wrong next-tile guess), and which instructions stall.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/c3; mkdir -p $R
t0=$SECONDS
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:" $R/build.log | head -3
timeout 400 ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 4 --launch-count 4 --section SourceCounters --section WarpStateStats --metrics gpu__time_duration.sum -o $R/src python3 notes/h100_2026-11-24c/ncu_lowrank.py > $R/ncu.log 2>&1; echo "ncu rc=$? at $((SECONDS-t0))s"; tail -3 $R/ncu.log
for id in 0 1 2 3; do
  ncu --import $R/src.ncu-rep --page source --print-source sass --csv --launch-skip $id --launch-count 1 > $R/sass_$id.csv 2> $R/sass_$id.err
  echo "sass $id: $(wc -l < $R/sass_$id.csv) lines"
done
[[ $(wc -l < $R/sass_1.csv) -lt 100 ]] && { ncu --import $R/src.ncu-rep --page source --print-source sass --csv > $R/sass_all.csv 2>&1; echo "sass all: $(wc -l < $R/sass_all.csv) lines"; head -c 600 $R/sass_1.err; }
ncu --import $R/src.ncu-rep --page raw --csv --metrics gpu__time_duration.sum > $R/time.csv 2>&1; tail -4 $R/time.csv | cut -c1-300
head -3 $R/sass_1.csv | cut -c1-600
tar -C /tmp --exclude=c3/gc -cJf $OUT/c3.tar.xz c3
