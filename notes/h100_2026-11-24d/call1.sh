#!/usr/bin/env bash
# Session 22 call 1: gelu-cat quantization with the low-rank down-projection
# (quantize_act_*_gelu_cat_lowrank, quantize_act_fp8_gelu_cat_lowrank_cat). Kernel objects compiled
# ahead on the CPU machine (.sobuild/kernels.tar.xz); the bindings build here and come back.
# Then the GPU tests of the producer-fused quantizations, the op's microbenchmark, and the FLUX step.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/d1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gelu_cat_kernels.py tests/gpu/test_geglu_kernels.py tests/gpu/test_layer_norm_quant.py tests/gpu/test_static_act.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 90 python3 benchmarks/bench_gelu_cat.py --formats int8 fp8-cat --out-dir $R/gelu > $R/gelu.log 2>&1; echo "bench_gelu_cat rc=$? at $((SECONDS-t0))s"; tail -9 $R/gelu.log
left=$((580 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 w4a8 w4a8-lr32 fp8-lr32 --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cat $R/pipe/bench_pipeline.md || tail -5 $R/pipe.log
tar -C /tmp --exclude=d1/gc -cJf $OUT/d1.tar.xz d1
