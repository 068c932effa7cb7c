#!/usr/bin/env bash
# Session 11 call 8, the committed tree: FLUX.1-dev denoising memory (4 steps at 1024x1024), bf16 vs
# W4A8 (+ low-rank 32), with and without the temporal feature cache + offload (issue 6's bar).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r8
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r8/gc tools/gpu_check.sh build > /tmp/r8/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r8/build.log
timeout $((575 - SECONDS)) python3 benchmarks/bench_pipeline.py --models flux1-dev --denoise-memory --modes bf16 w4a8 w4a8-lr32 \
  --mode-timeout 120 --out-dir /tmp/r8/mem > /tmp/r8/mem.log 2>&1; echo "memory rc=$? at $((SECONDS-t0))s"
cut -c1-220 /tmp/r8/mem/bench_denoise_memory.md
rm -rf /tmp/r8/gc/so; tar -C /tmp -cJf $OUT/s11call8.tar.xz r8
