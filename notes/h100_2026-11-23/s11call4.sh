#!/usr/bin/env bash
# Session 11 call 4: FLUX.1-dev transformer step (1024x1024, batch 1, blocks compiled regionally):
# what torchao's default coordinate-descent tuning buys at run time (torchao-fp8 vs
# torchao-fp8-notune, both + compile), next to bf16 eager and qengine FP8 + compile + CUDA graph.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r4
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r4/gc tools/gpu_check.sh build > /tmp/r4/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r4/build.log
timeout $((570 - SECONDS)) python3 benchmarks/bench_pipeline.py --models flux1-dev --reps 10 --mode-timeout 330 --out-dir /tmp/r4/flux \
  --modes bf16 torchao-fp8-notune+compile fp8+compile+graph torchao-fp8+compile > /tmp/r4/flux.log 2>&1; echo "flux rc=$? at $((SECONDS-t0))s"
cut -c1-200 /tmp/r4/flux/bench_pipeline.md
rm -rf /tmp/r4/gc/so /tmp/r4/flux/ref_*.pt; tar -C /tmp -cJf $OUT/s11call4.tar.xz r4
