#!/usr/bin/env bash
# Session 11 call 3: SDXL UNet step (1024x1024, batch 1), the whole UNet compiled as one graph:
# bf16 eager, torchao FP8 + compile with set_inductor_config=False (torchao's default turns on
# coordinate-descent tuning of every kernel, which kept the compile running past 16 minutes),
# qengine FP8 + CUDA graph, bf16 + CUDA graph, bf16 + compile.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r3
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r3/gc tools/gpu_check.sh build > /tmp/r3/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r3/build.log
timeout $((570 - SECONDS)) python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --reps 20 --mode-timeout 300 --out-dir /tmp/r3/sdxl \
  --modes bf16 torchao-fp8-notune+compile fp8+graph bf16+graph bf16+compile > /tmp/r3/sdxl.log 2>&1; echo "sdxl rc=$? at $((SECONDS-t0))s"
cut -c1-200 /tmp/r3/sdxl/bench_pipeline.md
grep -h "warm-up call" /tmp/r3/sdxl/errors/*.log 2>/dev/null | tail -3
rm -rf /tmp/r3/gc/so /tmp/r3/sdxl/ref_*.pt; tar -C /tmp -cJf $OUT/s11call3.tar.xz r3
