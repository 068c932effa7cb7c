#!/usr/bin/env bash
# Session 18 call 3: warp stall breakdown of the 128x256 W4A8 kernel at 4608x3072->12288,
# plain vs staged low-rank r32 vs product path (ncu, same script as call 2).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r3; mkdir -p $R
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; head -3 $R/build.log
timeout 240 ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 3 --launch-count 3 --metrics "gpu__time_duration.sum,smsp__cycles_active.avg,smsp__inst_executed.avg,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:smsp__pcsamp_warps_issue_stalled_.*" --csv python3 notes/h100_2026-11-23h/ncu_lowrank.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$?"
grep -v "^==" $R/ncu.csv | python3 -c "
import csv, sys, collections
rows = list(csv.DictReader(sys.stdin))
t = collections.defaultdict(dict)
for r in rows:
    try: v = float(r['Metric Value'].replace(',', ''))
    except ValueError: continue
    t[r['Metric Name']][r['ID']] = v
for name in sorted(t):
    vals = [t[name].get(i, float('nan')) for i in ('0', '1', '2')]
    if name.startswith('smsp__pcsamp') and max(vals) < 1: continue
    if 'stalled' in name and max(vals) < 0.05: continue
    print(f'{name:90s}', ' '.join(f'{v:14.3f}' for v in vals))
"
tail -3 $R/ncu.err
tar -C /tmp --exclude=r3/gc -cJf $OUT/r3.tar.xz r3
