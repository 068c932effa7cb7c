#!/usr/bin/env bash
# Session 26 call 3: SD3's joint attention fused too (FusedJointAttnProcessor2_0). Build (kernel
# objects compiled ahead on the CPU machine and carried: only the bindings compile); the fused
# q/k/v GPU tests (FLUX and SD3, four schemes); the SD3-medium step, unfused and fused.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e3; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 300 tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -6; grep -c "qengine: compiled" $R/gc/build.log
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_fused_projections_gpu.py tests/gpu/test_fused_norms.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -8
left=$((540 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models sd3-medium --modes bf16 bf16+compile+graph fp8 fp8-qkv fp8+compile+graph fp8-qkv+compile+graph w4a8-lr32+compile+graph w4a8-lr32-qkv+compile+graph --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cut -d'|' -f2-5,12,15,16 $R/pipe/bench_pipeline.md || grep ms_median $R/pipe.log | cut -c1-200
tar -C /tmp --exclude=e3/gc -cJf $OUT/e3.tar.xz e3
