#!/usr/bin/env bash
# Session 18 call 6 (128x64 epilogue subtiles for the staged kernels; no pipeline run): the W4A8 low-rank branch multiplied in the cooperative epilogue from
# operands staged in shared memory (rank <= 32; csrc/w4a8/sm90/lowrank_staged_epilogue.cuh).
# Build (packs the .so for later calls), the W4A8 GPU tests, the W4A8 table (FLUX shapes + few
# tokens), and the FLUX.1-dev step in eager bf16 / W4A8 / W4A8 + r32.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r6; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head -20
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests_w4a8.log 2>&1; echo "w4a8 tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests_w4a8.log | tail -15
timeout 90 python3 benchmarks/bench_w4a8.py --m-sweep 1 32 64 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11 $R/w4a8/bench_w4a8.md | head -20
tar -C /tmp --exclude=r6/gc -cJf $OUT/r6.tar.xz r6
