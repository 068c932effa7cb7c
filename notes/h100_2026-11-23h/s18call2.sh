#!/usr/bin/env bash
# Session 18 call 2: why the staged low-rank epilogue costs +30-37% (call 1). ncu instruction
# counts of the 128x256 W4A8 kernel at 4608x3072->12288: plain, staged r32, product path r32.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r2; mkdir -p $R
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; head -3 $R/build.log
ncu --query-metrics 2>/dev/null | grep -iE "hmma|pipe_tensor|shared_ld|op_ffma" | head -20
M="gpu__time_duration.sum,smsp__inst_executed.sum,smsp__sass_inst_executed_op_shared_ld.sum,smsp__sass_thread_inst_executed_op_ffma_pred_on.sum,sass__inst_executed_per_opcode"
timeout 240 ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 3 --launch-count 3 --metrics $M --print-metric-instances values --csv python3 notes/h100_2026-11-23h/ncu_lowrank.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$?"
grep -v "^==" $R/ncu.csv | python3 -c "
import csv, sys
rows = list(csv.DictReader(sys.stdin))
for r in rows:
    v = r['Metric Value']
    if len(v) > 300: v = v[:300] + '...'
    print(r['ID'], r['Metric Name'], r['Metric Unit'], v)
"
tail -3 $R/ncu.err
tar -C /tmp --exclude=r2/gc -cJf $OUT/r2.tar.xz r2
