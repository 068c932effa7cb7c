#!/usr/bin/env bash
# Session 19 call 2 (warm machine, incremental build): the subtile offset fix of the wgmma path
# (call 1 checked the fragment layout against tile offsets, so subtiles 1-7 took the FMA fallback):
# build, the low-rank W4A8 tests, the W4A8 table, and ncu FFMA / instruction counts of the 128x256
# kernel at 4608x3072->12288 (plain, staged, product path) to show which path ran.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r2; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head -20
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "lowrank or staged" > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 40 python3 benchmarks/bench_w4a8.py --no-m-sweep --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,7,8,9,10 $R/w4a8/bench_w4a8.md | head -12
M="gpu__time_duration.sum,smsp__inst_executed.sum,smsp__sass_inst_executed_op_shared_ld.sum,smsp__sass_thread_inst_executed_op_ffma_pred_on.sum"
left=$((570 - SECONDS + t0))
timeout $left ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 3 --launch-count 3 --metrics $M --csv python3 notes/h100_2026-11-23h/ncu_lowrank.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$?"
grep -v "^==" $R/ncu.csv | python3 -c "
import csv, sys
for r in csv.DictReader(sys.stdin):
    print(r['ID'], r['Metric Name'], r['Metric Value'])
"
tar -C /tmp --exclude=r2/gc -cJf $OUT/r2.tar.xz r2
