#!/usr/bin/env bash
# Session 23 call 9 (call 5's .so, the committed code): where the staged low-rank branch's
# overhead goes on the 128x128 tile (4608x3072->3072) and the 128x256 one (4096x3072->3072): ncu
# with per-instruction counters, clocks as found. For the next session; no code change.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e9; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
timeout 400 ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 4 --launch-count 4 \
  --section SpeedOfLight --section WarpStateStats --section InstructionStats --section SourceCounters \
  --metrics gpu__time_duration.sum,sm__cycles_active.avg,smsp__inst_executed.sum \
  -o $R/staged python3 notes/h100_2026-11-24e/ncu_staged.py > $R/ncu.log 2>&1; echo "ncu rc=$? at $((SECONDS-t0))s"; tail -2 $R/ncu.log
ncu --import $R/staged.ncu-rep --page raw --csv --metrics gpu__time_duration.sum,sm__cycles_active.avg,smsp__inst_executed.sum > $R/raw.csv 2>&1
for id in 0 1 2 3; do ncu --import $R/staged.ncu-rep --page source --print-source sass --csv --launch-skip $id --launch-count 1 > $R/sass_$id.csv 2>/dev/null; done
python3 - "$R" <<'PY'
import csv, sys
R = sys.argv[1]
rows = list(csv.reader(open(f"{R}/raw.csv")))
h = rows[0]
for r in rows[2:]:
    print(r[h.index("ID")], r[h.index("Kernel Name")][:60], "us", r[h.index("gpu__time_duration.sum")],
          "cycles", r[h.index("sm__cycles_active.avg")], "inst", r[h.index("smsp__inst_executed.sum")])
PY
tar -C /tmp --exclude=e9/gc --exclude='*.ncu-rep' -cJf $OUT/e9.tar.xz e9
