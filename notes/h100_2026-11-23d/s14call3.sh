#!/usr/bin/env bash
# Session 14 call 3: where the static-scale SDXL FP8 step spends its GPU time, against the dynamic
# one (benchmarks/profile_step.py, whole UNet compiled as one graph, q/k/v fused). Carried build.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r3; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; head -2 $R/build.log
for m in fp8-static-qkv+compile fp8-qkv+compile; do
  timeout $(( (590 - SECONDS) / 2 + 20 )) python3 benchmarks/profile_step.py --model sdxl --mode $m --compile-scope model --rows 60 > $R/prof_${m/+/_}.txt 2> $R/prof_${m/+/_}.err
  echo "$m rc=$? at $((SECONDS-t0))s"; head -18 $R/prof_${m/+/_}.txt; tail -3 $R/prof_${m/+/_}.err
done
tar -C /tmp -cJf $OUT/s14call3.tar.xz r3
