#!/usr/bin/env bash
# Session 19 call 4 (diagnostics only, committed code, .so of call 2 carried): where the wgmma
# staged node's remaining +20-30% goes. ncu stall breakdown of the 128x256 kernel at
# 4608x3072->12288 (plain, staged, product path; as s18call3.sh), then per-SASS-instruction
# stall samples of the staged kernel (source page), summed here by instruction.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r4; mkdir -p $R
t0=$SECONDS
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; head -3 $R/build.log
timeout 200 ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 3 --launch-count 3 --metrics "gpu__time_duration.sum,smsp__cycles_active.avg,smsp__inst_executed.avg,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,regex:smsp__pcsamp_warps_issue_stalled_.*" --csv python3 notes/h100_2026-11-23h/ncu_lowrank.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$? at $((SECONDS-t0))s"
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
    if not name.startswith('smsp__pcsamp') or name.endswith('not_issued') or max(vals) < 100: continue
    print(f'{name[len(\"smsp__pcsamp_warps_issue_stalled_\"):]:40s}', ' '.join(f'{v:10.0f}' for v in vals))
"
left=$((560 - SECONDS + t0))
timeout $left ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 4 --launch-count 1 --section SourceCounters --section WarpStateStats -o $R/staged python3 notes/h100_2026-11-23h/ncu_lowrank.py > $R/ncu_src.log 2>&1; echo "ncu src rc=$? at $((SECONDS-t0))s"
ncu -i $R/staged.ncu-rep --page source --csv --print-source sass > $R/staged_sass.csv 2> $R/sass.err; echo "sass rc=$? $(wc -l < $R/staged_sass.csv) lines"; head -c 600 $R/staged_sass.csv; echo
xz -T0 $R/staged_sass.csv
tar -C /tmp --exclude=r4/gc --exclude='r4/*.ncu-rep' -cJf $OUT/r4.tar.xz r4
