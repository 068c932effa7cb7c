#!/usr/bin/env bash
# Session 27 call 1: (a) the wip/sched-args refactor (staged node gets the kernel's scheduler
# arguments): every W4A8 TU rebuilt, the W4A8 kernel tests; (b) the gelu-cat ops with a low-rank
# branch in plain mode now run our GELU kernel, which also returns each row's absmax, and the tile
# kernel quantizes in its one pass (no second pass over X): gelu-cat, low-rank and quantize tests,
# bench_gelu_cat; (c) the tile kernel's experimental variants (QENGINE_QLR_HINT: cache hints,
# reversed pass 2) timed interleaved, and ncu of the tile kernel; (d) the FLUX step.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/b1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 330 tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -6
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_lowrank_kernels.py tests/gpu/test_lowrank_cat_kernels.py > $R/tests_q.log 2>&1; echo "quantize tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_q.log | tail -6
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "not real_shapes and not m_sweep" > $R/tests_w4a8.log 2>&1; echo "w4a8 tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_w4a8.log | tail -4
timeout 60 python3 benchmarks/bench_gelu_cat.py --formats int8 fp8 --reps 15 --out-dir $R/gelu > $R/gelu.log 2>&1; echo "gelu-cat bench rc=$? at $((SECONDS-t0))s"
cat $R/gelu/*.md 2>/dev/null | tail -8
timeout 60 python3 notes/h100_2026-11-25b/qlr_time.py --out $R/qlr.json > $R/qlr.log 2>&1; echo "qlr rc=$? at $((SECONDS-t0))s"; cat $R/qlr.log | tail -10
timeout 60 ncu --kernel-name regex:"quantize" --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy \
  -o $R/qlr python3 notes/h100_2026-11-25b/qlr_ncu.py > $R/ncu.log 2>&1; echo "ncu rc=$? at $((SECONDS-t0))s"
ncu --import $R/qlr.ncu-rep --page details > $R/ncu_details.txt 2>&1
left=$((585 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 w4a8-lr32 w4a8-lr32-qkv fp8-lr32 --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cut -d'|' -f2-5,12,15,16 $R/pipe/bench_pipeline.md || tail -5 $R/pipe.log
tar -C /tmp --exclude=b1/gc --exclude='*.ncu-rep' -cJf $OUT/b1.tar.xz b1
