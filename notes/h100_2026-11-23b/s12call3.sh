#!/usr/bin/env bash
# Session 12 call 3: where the GPU time of one compiled SDXL step goes, FP8 vs bf16, both with
# the attention projections fused (benchmarks/profile_step.py, whole UNet compiled as one graph).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r3; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"
for m in fp8-qkv+compile bf16-qkv+compile; do
  timeout 260 python3 benchmarks/profile_step.py --model sdxl --mode $m --compile-scope model --rows 60 > $R/prof_${m/+/_}.txt 2> $R/prof_${m/+/_}.err
  echo "$m rc=$? at $((SECONDS-t0))s"; sed -n '1,16p' $R/prof_${m/+/_}.txt
done
rm -rf $R/gc/so; tar -C /tmp -cJf $OUT/s12call3.tar.xz r3
