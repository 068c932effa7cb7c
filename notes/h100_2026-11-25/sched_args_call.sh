#!/usr/bin/env bash
# For a later session, on branch wip/sched-args: the staged low-rank node gets the kernel's own
# tile-scheduler arguments (built once in W4A8Gemm::arguments) instead of a raster-order bool.
# Compiled for sm_90a on the CPU machine (168 registers, no spills); not yet run on a GPU. Build
# (every W4A8 TU recompiles), the W4A8 kernel tests, the W4A8 table (should read as before).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/sa; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 400 tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -6
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "not real_shapes and not m_sweep" > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -8
timeout 90 python3 benchmarks/bench_w4a8.py --no-m-sweep --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11,16 $R/w4a8/bench_w4a8.md | head -12
tar -C /tmp --exclude=sa/gc/so -cJf $OUT/sa.tar.xz sa
