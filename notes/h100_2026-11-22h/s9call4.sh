#!/usr/bin/env bash
# Session 9 call 4: out-of-sample check of the split-K heuristic at batch 2 (CFG): SD1.5 convs + SDXL stride-2 convs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$?"; tail -1 /tmp/r/build.log
timeout 330 python3 benchmarks/bench_conv.py --models sd1.5 --only k3s1 k3s2 --batch 2 --sweep-configs --sweep-splits 1 2 3 4 --reps 10 --no-plot --out-dir /tmp/r/sweep_b2 > /tmp/r/sweep_b2.log 2>&1; echo "sweep rc=$?"
timeout 120 python3 benchmarks/bench_conv.py --models sdxl --only k3s2 --batch 2 --sweep-configs --sweep-splits 1 2 3 4 --reps 10 --no-plot --out-dir /tmp/r/sweep_b2_sdxl > /tmp/r/sweep_b2_sdxl.log 2>&1; echo "sweep sdxl rc=$?"
python3 - <<'PY'
import json
for f in ('/tmp/r/sweep_b2/bench_conv.json', '/tmp/r/sweep_b2_sdxl/bench_conv.json'):
    try:
        rows = json.load(open(f))['rows']
    except Exception as e:
        print(f, e); continue
    for r in rows:
        sw = {k.split('[')[1][:-1]: v for k, v in r.items() if k.startswith('int8_static_us[')}
        h = r['int8_config']; best = min(sw, key=sw.get)
        uns = min((k for k in sw if '_split' not in k), key=sw.get)
        print(f"{r['shape'][:32]:32s} b{r['batch']} heur {h:28s} {sw.get(h, float('nan')):7.2f} best-unsplit {uns:20s} {sw[uns]:7.2f} best {best:28s} {sw[best]:7.2f}")
PY
tar -C /tmp -cJf $OUT/s9call4.tar.xz r
