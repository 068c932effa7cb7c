#!/usr/bin/env bash
# Session 24 call 4: the 64x64 ping-pong W4A8 tile in clusters of 2 or 4 row tiles (TMA
# multicast of the activation tile, which few tokens re-read once per row tile). Build, W4A8 tests
# (the new configs included), the few-token table with every config forced.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e4; mkdir -p $R
t0=$SECONDS
ARGS="--no-model-shapes --m-sweep 16 24 32 48 64 --sweep-configs --reps 15"
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=|compiled" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 150 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/new > $R/bench_new.log 2>&1; echo "bench new rc=$? at $((SECONDS-t0))s"
python3 - $R <<'PY'
import json, sys
R = sys.argv[1]
def load(v):
    try: return {(r["M"], r["K"], r["N"]): r for r in json.load(open(f"{R}/{v}/bench_w4a8.json"))["rows"]}
    except Exception as e: print(v, e); return {}
new = load("new")
cf = ["mma_128x64x128_splitk", "mma_128x64x256_splitk", "64x64x128_pingpong", "64x64x128_pingpong_c2x1", "64x64x128_pingpong_c4x1", "128x64x128_coop_streamk", "128x32x128_coop_streamk"]
print("M K N | int8 | w4a8 (cfg) | " + " | ".join(cf))
for key in new:
    n = new[key]
    g = lambda r, k: r.get(k, float("nan"))
    print(f"{key} | {g(n,'w8a8_int8_us'):.1f} | {g(n,'w4a8_us'):.1f} ({n['w4a8_config'][5:]}) | "
          + " | ".join(f"{g(n,'cfg:sm90_'+c+'_us'):.1f}" for c in cf))
PY
tar -C /tmp --exclude=e4/gc -cJf $OUT/e4.tar.xz e4
