#!/usr/bin/env bash
# Session 11 call 1: 256x128 conv tiles in clusters of two along N (activation tile multicast),
# split-K allowed: build, register/smem use, conv tests, sweep of every config x split on the
# convs whose plan the model changes (plus the issue-6 bar shapes), batch 1 and 2.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -2 /tmp/r/build.log
for f in /tmp/qe-build/qengine_kernels/csrc_conv_sm90_*c1x2*.o; do echo "$(basename $f): $(cuobjdump --dump-resource-usage $f 2>&1 | grep -oE "REG:[0-9]+ STACK:[0-9]+ SHARED:[0-9]+" | sort -u | tr "\n" " ")"; done
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_conv_kernels.py > /tmp/r/conv_tests.log 2>&1; echo "conv tests rc=$? at $((SECONDS-t0))s"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/conv_tests.log | head -12
left=$((575 - SECONDS))
timeout $left python3 benchmarks/bench_conv.py --models sdxl sd1.5 --batch 1 2 --sweep-configs --sweep-splits 1 2 3 4 --reps 10 --no-plot --out-dir /tmp/r/sweep \
  --only 'sdxl:32x32x1280->1280 k3s1' 'sdxl:32x32x1920->1280 k3s1' 'sdxl:32x32x2560->1280 k3s1' 'sdxl:64x64x1280->1280 k3s1' \
         'sdxl:128x128x640->640 k3s1' 'sdxl:64x64x640->640 k3s1' 'sd1.5:64x64x960->320 k3s1' 'sd1.5:32x32x1280->1280 k3s1' \
  > /tmp/r/sweep.log 2>&1; echo "sweep rc=$? at $((SECONDS-t0))s"
python3 - <<'PY'
import json
try:
    rows = json.load(open('/tmp/r/sweep/bench_conv.json'))['rows']
except Exception as e:
    rows = []; print('no sweep json', e)
for r in rows:
    for kind in ('int8', 'fp8'):
        sw = {k.split('[')[1][:-1]: v for k, v in r.items() if k.startswith(f'{kind}_static_us[')}
        if not sw: continue
        best = min(sw, key=sw.get)
        old = {k: v for k, v in sw.items() if 'c1x2' not in k}
        bo = min(old, key=old.get)
        cl = ' '.join(f"s{k.split('split')[1] if 'split' in k else 1}:{v:.1f}" for k, v in sw.items() if 'c1x2' in k)
        print(f"{kind:4s} {r['shape'][:28]:28s} b{r['batch']} cudnn {r['cudnn_bf16_us']:6.1f} heur {r[kind+'_config'].replace('sm90_','')} {r[kind+'_static_us']:.1f} | best w/o c1x2 {bo.replace('sm90_','')} {old[bo]:.1f} | c1x2 {cl} | x cudnn {r['cudnn_bf16_us']/sw[best]:.2f}")
PY
rm -rf /tmp/r/gc/so; tar -C /tmp -cJf $OUT/s11call1.tar.xz r
