#!/usr/bin/env bash
# Session 24 call 2: the mma.sync split-K W4A8 kernel (few tokens) widens to 16 x w (5 ops per 8
# values instead of ~10), loads its epilogue's scales and bias between a split cluster barrier's
# arrive and wait, and waits for the last cluster barrier only at exit. Same call: the few-token
# table with every config forced, first with session 23's .so (old sources), then the new build,
# the W4A8 kernel tests, and the table again.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e2; mkdir -p $R
t0=$SECONDS
ARGS="--no-model-shapes --m-sweep 1 16 24 32 48 64 --sweep-configs --reps 15"
so=$(python3 -c 'import sysconfig; print("qengine/_C" + sysconfig.get_config_var("EXT_SUFFIX"))')
xz -d -c .sobuild/C_old.so.xz > $so
timeout 150 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/old > $R/bench_old.log 2>&1; echo "bench old rc=$? at $((SECONDS-t0))s"
rm -f $so
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=|compiled" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null
timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 150 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/new > $R/bench_new.log 2>&1; echo "bench new rc=$? at $((SECONDS-t0))s"
python3 - $R <<'PY'
import json, sys
R = sys.argv[1]
def load(v):
    try: return {(r["M"], r["K"], r["N"]): r for r in json.load(open(f"{R}/{v}/bench_w4a8.json"))["rows"]}
    except Exception as e: print(v, e); return {}
old, new = load("old"), load("new")
cf = ["mma_128x64x128_splitk", "mma_128x64x256_splitk", "64x64x128_pingpong", "128x64x128_coop_streamk", "128x32x128_coop_streamk"]
print("M K N | int8 old/new | w4a8 old/new (cfg) | " + " | ".join(c[:22] + " old/new" for c in cf))
for key in new:
    o, n = old.get(key, {}), new[key]
    g = lambda r, k: r.get(k, float("nan"))
    print(f"{key} | {g(o,'w8a8_int8_us'):.1f}/{g(n,'w8a8_int8_us'):.1f} | {g(o,'w4a8_us'):.1f}/{g(n,'w4a8_us'):.1f} ({n['w4a8_config'][5:]}) | "
          + " | ".join(f"{g(o,'cfg:sm90_'+c+'_us'):.1f}/{g(n,'cfg:sm90_'+c+'_us'):.1f}" for c in cf))
PY
tar -C /tmp --exclude=e2/gc -cJf $OUT/e2.tar.xz e2
