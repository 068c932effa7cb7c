#!/usr/bin/env bash
# Session 19 call 1: the staged low-rank node with one wgmma per warp group and subtile (instead of
# mma.sync per 16x8 block): build, the W4A8 GPU tests, the W4A8 table (FLUX and SD3 shapes).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head -20
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
left=$((560 - SECONDS + t0 - 45))
timeout $left python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "lowrank or staged" > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 40 python3 benchmarks/bench_w4a8.py --no-m-sweep --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,7,8,9,10 $R/w4a8/bench_w4a8.md | head -12
tar -C /tmp --exclude=r1/gc -cJf $OUT/r1.tar.xz r1
