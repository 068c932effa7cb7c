#!/usr/bin/env bash
# Session 10 call 1: SDXL UNet step vs torchao FP8 + compile, the whole UNet compiled as one graph
# at fixed shapes (--compile-scope model). Also packs the built extension for later calls.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build pack > /tmp/r/build.log 2>&1; echo "build rc=$? in $((SECONDS-t0))s"; tail -2 /tmp/r/build.log
cp -r /tmp/r/gc/so $OUT/so 2>/dev/null
P="python3 benchmarks/bench_pipeline.py --models sdxl --reps 20 --compile-scope model --out-dir /tmp/r/sdxl"
timeout 150 $P --modes bf16 fp8+graph bf16+graph --mode-timeout 120 > /tmp/r/sdxl_a.log 2>&1; echo "sdxl a rc=$? at $((SECONDS-t0))s"
left=$((585 - SECONDS))
timeout $left $P --resume --modes bf16 fp8+graph bf16+graph torchao-fp8+compile torchao-fp8+compile+graph --mode-timeout $((left/2 > 240 ? left/2 : 240)) > /tmp/r/sdxl_b.log 2>&1; echo "sdxl b rc=$? at $((SECONDS-t0))s"
cut -c1-260 /tmp/r/sdxl/bench_pipeline.md 2>/dev/null
grep -h "warm-up call\|Recompiling" /tmp/r/sdxl/errors/*.log 2>/dev/null | tail -8
rm -rf /tmp/r/gc/so /tmp/r/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s10call1.tar.xz r
