#!/usr/bin/env bash
# Session 10 call 2: SDXL UNet step, torchao FP8 + compile (whole UNet, one graph at fixed shapes)
# given most of a call to compile (call 1: no warm-up step done after 240 s), against qengine FP8
# + CUDA graph and bf16 eager in the same run. The extension comes prebuilt (.sobuild, call 1).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
t0=$SECONDS
ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r/build.log
P="python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --out-dir /tmp/r/sdxl"
timeout 60 $P --modes bf16 --reps 10 --mode-timeout 55 > /tmp/r/sdxl_a.log 2>&1; echo "bf16 rc=$? at $((SECONDS-t0))s"
left=$((535 - SECONDS))
timeout $((left + 5)) $P --resume --modes bf16 torchao-fp8+compile --reps 10 --warmup 2 --mode-timeout $left > /tmp/r/sdxl_b.log 2>&1; echo "torchao rc=$? at $((SECONDS-t0))s"
timeout $((590 - SECONDS)) $P --resume --modes bf16 torchao-fp8+compile fp8+graph --reps 10 --mode-timeout 45 > /tmp/r/sdxl_c.log 2>&1; echo "fp8+graph rc=$? at $((SECONDS-t0))s"
cut -c1-300 /tmp/r/sdxl/bench_pipeline.md 2>/dev/null
grep -h "warm-up call" /tmp/r/sdxl/errors/*.log 2>/dev/null | tail -4
rm -f /tmp/r/sdxl/ref_*.pt
tar -C /tmp -cJf $OUT/s10call2.tar.xz r
