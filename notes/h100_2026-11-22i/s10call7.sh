#!/usr/bin/env bash
# Session 10 call 7 (of two back-to-back calls): SDXL UNet step, bf16 eager, qengine FP8 + CUDA
# graph and torchao FP8 + compile (whole UNet, one graph) in one run, with the run detached
# (setsid) so that it outlives this call's 10 minutes; call 8 waits for it and collects it.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r/build.log
date +%s > /tmp/r/start
setsid nohup bash -c "python3 benchmarks/bench_pipeline.py --models sdxl --compile-scope model --modes bf16 fp8+graph torchao-fp8+compile --reps 10 --warmup 2 --mode-timeout 1500 --out-dir /tmp/r/sdxl > /tmp/r/sdxl.log 2>&1; echo done > /tmp/r/done" > /dev/null 2>&1 < /dev/null &
while [ $SECONDS -lt 580 ] && [ ! -f /tmp/r/done ]; do sleep 10; done
echo "at $((SECONDS-t0))s: done=$([ -f /tmp/r/done ] && echo yes || echo no); inductor cache $(du -sh /tmp/torchinductor_$(whoami) 2>/dev/null | cut -f1)"
grep -h '"mode"' /tmp/r/sdxl.log | cut -c1-200
