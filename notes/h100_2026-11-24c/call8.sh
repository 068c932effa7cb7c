#!/usr/bin/env bash
# Session 21 call 8 (the committed code, .so of call 5 carried): where a FLUX.1-dev step's time
# goes with W4A8 and with W4A8 + low-rank 32 (profile_step.py), to split the branch's ~24 ms per
# step between the quantize kernel's down-projection, the GEMM epilogue and the conversions.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/c8; mkdir -p $R
t0=$SECONDS
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; grep "build:" $R/build.log | head -2
for mode in w4a8 w4a8-lr32; do
  timeout 250 python3 benchmarks/profile_step.py --model flux1-dev --mode $mode --rows 25 > $R/prof_$mode.log 2>&1; echo "$mode rc=$? at $((SECONDS-t0))s"
done
tar -C /tmp --exclude=c8/gc -cJf $OUT/c8.tar.xz c8
