#!/usr/bin/env bash
# Next session, call 1 (branch wip/lowrank-prefetch): the staged node copying the next tile's rows
# in end() (compiled only when written): build (packed, kernel objects too), the W4A8 GPU tests,
# the W4A8 table, and the ncu kernel times (plain / staged / product path at 4608x3072->12288;
# session 20 call 5: the committed node without staging was +4.6%, with it +17%).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/p1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head -20
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout 90 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 60 python3 benchmarks/bench_w4a8.py --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11,13 $R/w4a8/bench_w4a8.md | head -30
left=$((585 - SECONDS + t0))
timeout $left ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 3 --launch-count 3 --metrics "gpu__time_duration.sum,smsp__inst_executed.avg,regex:smsp__pcsamp_warps_issue_stalled_.*" --csv python3 notes/h100_2026-11-24b/ncu_lowrank.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$? at $((SECONDS-t0))s"
grep -v "^==" $R/ncu.csv | python3 -c "
import csv, sys, collections
t = collections.defaultdict(dict)
for r in csv.DictReader(sys.stdin):
    try: v = float(r['Metric Value'].replace(',', ''))
    except ValueError: continue
    t[r['Metric Name']][r['ID']] = v
for name in sorted(t):
    vals = [t[name].get(i, float('nan')) for i in ('0', '1', '2')]
    if name.endswith('not_issued') or max(vals) < 100: continue
    print(f'{name.replace(\"smsp__pcsamp_warps_issue_stalled_\", \"\"):40s}', ' '.join(f'{v:10.0f}' for v in vals))
"
tar -C /tmp --exclude=p1/gc -cJf $OUT/p1.tar.xz p1
