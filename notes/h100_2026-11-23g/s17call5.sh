#!/usr/bin/env bash
# Session 17 call 5: a 64x64x256 ping-pong W4A8 config (256-deep k-blocks) for 17..64 tokens on
# layers of at most 4096x4096, chosen by the heuristic there. Build, the whole GPU suite, and the
# few-token sweep with every config forced (the "w4a8 us" column is the heuristic's choice).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r5; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "error" $R/build.log | head -5
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null
timeout 60 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 16 24 32 40 48 64 --sweep-configs --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
python3 - <<'PY'
import json, os
f = "/tmp/r5/w4a8/bench_w4a8.json"
if os.path.exists(f):
    for r in json.load(open(f))["rows"]:
        if r["M"] == 1: continue
        cfg = {k[4:-3].replace("sm90_", ""): round(v, 1) for k, v in r.items() if k.startswith("cfg:") and ("pingpong" in k or "splitk" in k or "streamk" in k)}
        print(r["M"], r["K"], r["N"], "int8", round(r["w8a8_int8_us"], 1), "w4a8(heur)", round(r["w4a8_us"], 1), r["w4a8_config"].replace("sm90_", ""), cfg)
PY
timeout $((590 - SECONDS)) python3 -m pytest -q -p no:cacheprovider tests/gpu > $R/tests_all.log 2>&1; echo "gpu suite rc=$? at $((SECONDS-t0))s"
grep -E "^FAILED|^ERROR|passed|failed" $R/tests_all.log | tail -8
tar -C /tmp --exclude=r5/gc -cJf $OUT/r5.tar.xz r5
