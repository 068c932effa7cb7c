#!/usr/bin/env bash
# Session 21 call 2 (branch wip/lowrank-prefetch, + the first tile copied in the node constructor,
# rank-major chunk slots with compile-time division, one straight-line wgmma batch per rank).
# Kernel objects compiled ahead on the CPU machine (carried in .sobuild/kernels.tar.xz), so
# only the bindings build here. Then the W4A8 GPU tests, the W4A8 table, and ncu kernel times of
# plain / staged at 4608x3072->12288 and 4096x3072->3072 (call 1: staged +9.7% at the first; session
# 20 call 5: the committed node without its staging +4.6%, with it +17%).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/c2; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|build:|pack|error|compiled" $R/build.log | head -20
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 90 python3 benchmarks/bench_w4a8.py --m-sweep 1 16 24 32 48 64 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11,13 $R/w4a8/bench_w4a8.md | head -30
timeout 90 python3 notes/h100_2026-11-24c/prof_lowrank.py > $R/prof.log 2>&1; echo "prof rc=$? at $((SECONDS-t0))s"; grep -v Warning $R/prof.log | tail -6
left=$((585 - SECONDS + t0))
timeout $left ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 4 --launch-count 4 --metrics "gpu__time_duration.sum,smsp__inst_executed.avg,regex:smsp__pcsamp_warps_issue_stalled_.*" --csv python3 notes/h100_2026-11-24c/ncu_lowrank.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$? at $((SECONDS-t0))s"
python3 notes/h100_2026-11-24c/ncu_summary.py < $R/ncu.csv
tar -C /tmp --exclude=c2/gc -cJf $OUT/c2.tar.xz c2
