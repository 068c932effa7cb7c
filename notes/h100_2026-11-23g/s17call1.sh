#!/usr/bin/env bash
# Session 17 call 1: W4A8 stream-K configs (128x64 / 128x32 tiles, K shared over all SMs) for
# 17..64 tokens and a 128x256 cooperative tile for many tokens. Kernel objects were compiled
# ahead on the CPU machine (.sobuild/kernels.tar.xz): the build compiles the bindings and any
# kernel source whose key changed, then packs the .so for later calls. Then the W4A8 GPU tests,
# the few-token sweep with every config forced, and the FLUX/SD3 shapes with every config.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error|compiled csrc" $R/build.log | head -20
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $OUT/sobuild/ 2>/dev/null; ls $OUT/sobuild
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py > $R/tests_w4a8.log 2>&1; echo "w4a8 tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error|assert" $R/tests_w4a8.log | tail -15
timeout 170 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 1 16 24 32 40 48 56 64 96 --sweep-configs --reps 15 --out-dir $R/w4a8_small > $R/bench_small.log 2>&1; echo "bench small rc=$? at $((SECONDS-t0))s"
timeout $((590 - SECONDS)) python3 benchmarks/bench_w4a8.py --no-m-sweep --sweep-configs --reps 15 --time-budget 90 --out-dir $R/w4a8_flux > $R/bench_flux.log 2>&1; echo "bench flux rc=$? at $((SECONDS-t0))s"
python3 - <<'PY'
import json, os
for d in ("/tmp/r1/w4a8_small", "/tmp/r1/w4a8_flux"):
    f = os.path.join(d, "bench_w4a8.json")
    if not os.path.exists(f):
        print("missing", f); continue
    rows = json.load(open(f))["rows"]
    for r in rows:
        cfg = {k[4:-3].replace("sm90_", ""): round(v, 1) for k, v in r.items() if k.startswith("cfg:")}
        print(r["shape"], r["M"], r["K"], r["N"], "bf16", round(r["bf16_us"], 1), "int8", round(r["w8a8_int8_us"], 1), "w4a8", round(r["w4a8_us"], 1), r["w4a8_config"], cfg)
PY
tar -C /tmp -cJf $OUT/s17call1.tar.xz r1 --exclude=r1/gc/so
