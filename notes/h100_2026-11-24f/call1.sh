#!/usr/bin/env bash
# Session 24 call 1: the 64x256 ping-pong W4A8 tile (epilogue during the other warp group's
# mainloop) with the staged low-rank node ported (a buffer per warp group). Build (pack the .so),
# the staged-epilogue tests first (a trap would kill the bench), every config forced at the model
# shapes, with and without r32, then the whole W4A8 kernel test file.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e1; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build pack > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
mkdir -p $OUT/sobuild; cp $R/gc/so/C.so.xz $R/gc/so/C.so.src $R/gc/so/kernels.tar.xz $OUT/sobuild/ 2>/dev/null
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -k "staged or output_dtype" > $R/tests_staged.log 2>&1; rc=$?; echo "staged tests rc=$rc at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests_staged.log | tail -8
if [[ $rc == 0 ]]; then
  timeout 260 python3 benchmarks/bench_w4a8.py --no-m-sweep --sweep-configs --reps 10 --time-budget 200 --out-dir $R/sweep > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
  [[ -f $R/sweep/bench_w4a8.md ]] && python3 - $R/sweep/bench_w4a8.json <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
cf = ["128x128x128_coop", "128x256x128_coop", "64x256x128_pingpong", "64x128x128_pingpong"]
print("shape | bf16 | int8 | heur cfg | " + " | ".join(cf) + " | +r32: " + " | ".join(cf[:3]))
for r in rows:
    if r["M"] < 256: continue
    g = lambda k: r.get(k, float("nan"))
    print(f"{r['M']}x{r['K']}->{r['N']} | {r['bf16_us']:.1f} | {r['w8a8_int8_us']:.1f} | {r['w4a8_config'][5:]} | "
          + " | ".join(f"{g('cfg:sm90_'+c+'_us'):.1f}" for c in cf) + " | "
          + " | ".join(f"{g('cfg+r32:sm90_'+c+'_us'):.1f}" for c in cf[:3]))
PY
fi
left=$((570 - SECONDS + t0))
timeout $left python3 -m pytest -q -p no:cacheprovider tests/gpu/test_w4a8_kernels.py -x > $R/tests.log 2>&1; echo "tests rc=$? at $((SECONDS-t0))s"
grep -E "passed|failed|FAILED|Error" $R/tests.log | tail -8
tar -C /tmp --exclude=e1/gc -cJf $OUT/e1.tar.xz e1
