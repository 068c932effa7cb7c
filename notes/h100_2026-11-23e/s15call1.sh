#!/usr/bin/env bash
# Session 15 call 1: fused UNet resnets (GroupNorm + SiLU writing the conv's 8-bit input). Build
# (pack for later calls), the new and neighbouring GPU tests.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head
mkdir -p $OUT/sobuild; cp $R/gc/so/* $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout $((560 - SECONDS)) python3 -m pytest -q -x --durations=5 tests/gpu/test_fused_resnet.py tests/gpu/test_fused_norms.py tests/gpu/test_static_act.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert|s call" $R/tests.log | tail -25
rm -rf $R/gc/so; tar -C /tmp -cJf $OUT/s15call1.tar.xz r1
