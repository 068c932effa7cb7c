#!/usr/bin/env bash
# Session 17 call 4: the split-K kernel with 8 warps of 16 weight rows (config
# sm90_mma_128x64x128_splitk_w8; heuristic unchanged). Build (kernel objects carried from the CPU
# machine where still valid), the W4A8 GPU tests, and the few-token sweep with every config forced.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r4; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "error" $R/build.log | head -5
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests_w4a8.log 2>&1; echo "w4a8 tests rc=$? at $((SECONDS-t0))s"
grep -E "^FAILED|^ERROR|passed|failed" $R/tests_w4a8.log | tail -8
timeout $((585 - SECONDS)) python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 1 16 24 32 40 48 64 --sweep-configs --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
python3 - <<'PY'
import json, os
f = "/tmp/r4/w4a8/bench_w4a8.json"
if os.path.exists(f):
    for r in json.load(open(f))["rows"]:
        cfg = {k[4:-3].replace("sm90_", "").replace("128x64x128_", "").replace("128x", ""): round(v, 1) for k, v in r.items() if k.startswith("cfg:")}
        print(r["M"], r["K"], r["N"], "int8", round(r["w8a8_int8_us"], 1), "heur", round(r["w4a8_us"], 1), cfg)
PY
tar -C /tmp --exclude=r4/gc -cJf $OUT/r4.tar.xz r4
