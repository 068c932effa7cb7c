#!/usr/bin/env bash
# Session 24 call 7: the W4A8 epilogue multiplies (w_scale / 16) * acc instead of
# (w_scale * acc) / 16 (bit-identical; one multiply per row of a thread's fragment instead of per
# value). Same call: the model-shape table with call 3's .so (old sources), then the new build,
# the W4A8 kernel tests, and the table again.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e7; mkdir -p $R
t0=$SECONDS
ARGS="--no-m-sweep --reps 15"
so=$(python3 -c 'import sysconfig; print("qengine/_C" + sysconfig.get_config_var("EXT_SUFFIX"))')
xz -d -c .sobuild/C_old.so.xz > $so
timeout 100 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/old > $R/bench_old.log 2>&1; echo "bench old rc=$? at $((SECONDS-t0))s"
rm -f $so
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 100 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/new > $R/bench_new.log 2>&1; echo "bench new rc=$? at $((SECONDS-t0))s"
for v in old new; do echo "== $v"; [[ -f $R/$v/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11 $R/$v/bench_w4a8.md | head -12; done
tar -C /tmp --exclude=e7/gc -cJf $OUT/e7.tar.xz e7
