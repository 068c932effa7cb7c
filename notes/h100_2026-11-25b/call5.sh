#!/usr/bin/env bash
# Session 27 call 5: where the FLUX.1-dev step's GPU time goes now (W4A8 + low-rank 32 with fused
# q/k/v, and W4A8 without the branch), for the next session's priorities. No code change.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/b5; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 300 tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -4
for m in w4a8-lr32-qkv w4a8; do
  timeout 200 python3 benchmarks/profile_step.py --model flux1-dev --mode $m --rows 30 > $R/prof_$m.log 2>&1; echo "profile $m rc=$? at $((SECONDS-t0))s"
  grep -A12 "^category" $R/prof_$m.log
done
tar -C /tmp --exclude=b5/gc -cJf $OUT/b5.tar.xz b5
