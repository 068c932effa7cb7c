#!/usr/bin/env bash
# Session 10 call 3: 256-row conv tiles with two consumer warpgroups (256x128, 256x160): build,
# register/smem use, conv tests, sweep of every config x split over the SDXL convs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -2 /tmp/r/build.log
for f in /tmp/qe-build/qengine_kernels/csrc_conv_sm90_*256*.o; do echo "$(basename $f): $(cuobjdump --dump-resource-usage $f 2>&1 | grep -oE "REG:[0-9]+ STACK:[0-9]+ SHARED:[0-9]+" | sort -u | tr "\n" " ")"; done
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_conv_kernels.py > /tmp/r/conv_tests.log 2>&1; echo "conv tests rc=$? at $((SECONDS-t0))s"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/conv_tests.log | head -12
left=$((570 - SECONDS))
timeout $left python3 benchmarks/bench_conv.py --models sdxl --only k3 --sweep-configs --sweep-splits 1 2 3 4 --reps 10 --no-plot --out-dir /tmp/r/sweep > /tmp/r/sweep.log 2>&1; echo "sweep rc=$? at $((SECONDS-t0))s"
python3 - <<'PY'
import json
try:
    rows = json.load(open('/tmp/r/sweep/bench_conv.json'))['rows']
except Exception as e:
    rows = []; print('no sweep json', e)
for r in rows:
    sw = {k.split('[')[1][:-1]: v for k, v in r.items() if k.startswith('int8_static_us[')}
    best = min(sw, key=sw.get) if sw else '-'
    old = {k: v for k, v in sw.items() if '256x' not in k}
    bo = min(old, key=old.get) if old else '-'
    print(f"{r['shape'][:30]:30s} M{r['M']} N{r['N']} K{r['K']} cudnn {r['cudnn_bf16_us']:6.1f} heur {r['int8_config']} {sw.get(r['int8_config'],'?')} | best old {bo} {old.get(bo,'-')} | best {best} {sw.get(best,'-')}")
PY
rm -rf /tmp/r/gc/so; tar -C /tmp -cJf $OUT/s10call3.tar.xz r
