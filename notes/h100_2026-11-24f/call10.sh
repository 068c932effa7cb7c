#!/usr/bin/env bash
# Session 24 call 10: the split-K kernel takes clusters of up to 16 CTAs (sm_90's non-portable
# cluster size; call 9: fewer K splits were slower everywhere). The few-token sweep with the
# committed .so (9007e5e's sources), then the new build, the W4A8 kernel tests, the sweep again.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e10; mkdir -p $R
t0=$SECONDS
ARGS="--no-model-shapes --m-sweep 1 16 24 32 48 64 --sweep-configs --reps 15"
so=$(python3 -c 'import sysconfig; print("qengine/_C" + sysconfig.get_config_var("EXT_SUFFIX"))')
xz -d -c .sobuild/C_old.so.xz > $so
timeout 100 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/old > $R/bench_old.log 2>&1; echo "bench old rc=$? at $((SECONDS-t0))s"
rm -f $so
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null
timeout 100 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests.log | tail -15
timeout 100 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/new > $R/bench_new.log 2>&1; echo "bench new rc=$? at $((SECONDS-t0))s"
python3 - $R <<'PY'
import json, sys
R = sys.argv[1]
def load(v):
    try: return {(r["M"], r["K"], r["N"]): r for r in json.load(open(f"{R}/{v}/bench_w4a8.json"))["rows"]}
    except Exception as e: print(v, e); return {}
old, new = load("old"), load("new")
print("M K N | int8 old/new | w4a8 heuristic old/new (cfg) | split-K 128 old/new | split-K 256 old/new | 64x64 pp old/new")
for key in new:
    o, n = old.get(key, {}), new[key]
    g = lambda r, k: r.get(k, float("nan"))
    print(f"{key} | {g(o,'w8a8_int8_us'):.1f}/{g(n,'w8a8_int8_us'):.1f} | {g(o,'w4a8_us'):.1f}/{g(n,'w4a8_us'):.1f} ({n['w4a8_config'][5:]}) | "
          + " | ".join(f"{g(o,'cfg:sm90_'+c+'_us'):.1f}/{g(n,'cfg:sm90_'+c+'_us'):.1f}" for c in ["mma_128x64x128_splitk", "mma_128x64x256_splitk", "64x64x128_pingpong"]))
PY
tar -C /tmp --exclude=e10/gc -cJf $OUT/e10.tar.xz e10
