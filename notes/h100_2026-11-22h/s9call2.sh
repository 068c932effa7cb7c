#!/usr/bin/env bash
# Session 9 call 2: all conv tests (split plans' correctness), profile of the split-K fix-up.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$?"; tail -1 /tmp/r/build.log
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_conv_kernels.py > /tmp/r/conv_tests.log 2>&1; echo "conv tests rc=$?"; grep -E "^FAILED|passed|failed" /tmp/r/conv_tests.log | head -20
timeout 60 python3 .sobuild/prof_conv_splitk.py 2>&1 | tee /tmp/r/prof.txt | cut -c1-400
timeout 150 ncu --clock-control none -k regex:device_kernel --set full --import-source no -o /tmp/r/splitk python3 .sobuild/prof_conv_splitk.py --ncu > /tmp/r/ncu.log 2>&1; echo "ncu rc=$?"; tail -2 /tmp/r/ncu.log
ncu -i /tmp/r/splitk.ncu-rep --page details --csv > /tmp/r/details.csv 2>/dev/null; wc -l /tmp/r/details.csv
ncu -i /tmp/r/splitk.ncu-rep --page source --csv --print-source sass > /tmp/r/src.csv 2>/tmp/r/src.err; echo "src rc=$?"; wc -c /tmp/r/src.csv; head -c 300 /tmp/r/src.err
ls -la /tmp/r | head -30
tar -C /tmp -cJf $OUT/s9call2.tar.xz r
