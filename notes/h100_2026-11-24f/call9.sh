#!/usr/bin/env bash
# Session 24 call 9 (an experiment, uncommitted code: QENGINE_EXP_SPLITS forces the split-K
# kernel's cluster size): how many K splits suit 24-32 tokens of 3072x3072? 8 splits (today's
# plan: 192 CTAs of 3 stages, all loads issued up front, 60 SMs running two), 6 (144 CTAs of 4)
# or 5 (120 CTAs of 5, one per SM). The committed .so first, then the experimental build.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e9; mkdir -p $R
t0=$SECONDS
ARGS="--no-model-shapes --m-sweep 1 16 24 32 --sweep-configs --reps 15"
so=$(python3 -c 'import sysconfig; print("qengine/_C" + sysconfig.get_config_var("EXT_SUFFIX"))')
xz -d -c .sobuild/C_old.so.xz > $so
timeout 100 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/old > $R/bench_old.log 2>&1; echo "bench old rc=$? at $((SECONDS-t0))s"
rm -f $so
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
for c in 8 6 5 4; do QENGINE_EXP_SPLITS=$c timeout 100 python3 benchmarks/bench_w4a8.py $ARGS --out-dir $R/s$c > $R/bench_s$c.log 2>&1; echo "bench splits=$c rc=$? at $((SECONDS-t0))s"; done
python3 - $R <<'PY'
import json, sys
R = sys.argv[1]
def load(v):
    try: return {(r["M"], r["K"], r["N"]): r for r in json.load(open(f"{R}/{v}/bench_w4a8.json"))["rows"]}
    except Exception as e: print(v, e); return {}
runs = {v: load(v) for v in ["old", "s8", "s6", "s5", "s4"]}
print("M K N | int8 (old) | split-K 128 / 256: " + " | ".join(runs))
for key in runs["old"]:
    g = lambda r, k: r.get(k, float("nan"))
    print(f"{key} | {g(runs['old'][key], 'w8a8_int8_us'):.1f} | " + " | ".join(
        f"{g(runs[v].get(key, {}), 'cfg:sm90_mma_128x64x128_splitk_us'):.1f} / {g(runs[v].get(key, {}), 'cfg:sm90_mma_128x64x256_splitk_us'):.1f}" for v in runs))
PY
tar -C /tmp --exclude=e9/gc -cJf $OUT/e9.tar.xz e9
