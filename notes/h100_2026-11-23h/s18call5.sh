#!/usr/bin/env bash
# Session 18 call 5: the whole GPU suite on the committed code (the .so packed by call 4).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r5; mkdir -p $R
ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; head -3 $R/build.log
timeout 500 python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests_gpu.log 2>&1; echo "gpu tests rc=$?"
grep -E "passed|failed|FAILED|Error" $R/tests_gpu.log | tail -15
tar -C /tmp --exclude=r5/gc -cJf $OUT/r5.tar.xz r5
