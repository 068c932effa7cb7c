#!/usr/bin/env bash
# Session 12 call 4: the 64x160 W8A8 GEMM config. Build + pack (the GEMM sources changed), the
# W8A8 kernel tests (every config forced on every shape), then bench_gemm over the SDXL and SD1.5
# linear shapes with every config timed (--sweep-configs).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r4; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build rc|pack|error" $R/build.log | head
cp $R/gc/so/* $OUT/ 2>/dev/null
timeout 200 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_w8a8_kernels.py > $R/test_w8a8.log 2>&1; echo "w8a8 tests rc=$? at $((SECONDS-t0))s"; tail -3 $R/test_w8a8.log
timeout $((585 - SECONDS)) python3 benchmarks/bench_gemm.py --models sdxl sd1.5 --sweep-configs --rank 0 --reps 20 --out-dir $R/gemm > $R/gemm.log 2>&1; echo "gemm rc=$? at $((SECONDS-t0))s"
python3 - <<'PY'
import json
rows = json.load(open("/tmp/r4/gemm/bench_gemm.json"))["rows"]
for r in rows:
    cfg = {k[len("cfg_fp8_sm90_"):-3]: r[k] for k in r if k.startswith("cfg_fp8_sm90") and k.endswith("_us")}
    print(r.get("model"), r.get("M"), r.get("K"), r.get("N"), "bf16", r.get("bf16_linear_us"), "fp8", r.get("ours_fp8_gemm_us"),
          "qlin", r.get("ours_qlinear_fp8_us"), r.get("config_fp8"), cfg)
PY
rm -rf $R/gc/so; tar -C /tmp -cJf $OUT/s12call4.tar.xz r4
