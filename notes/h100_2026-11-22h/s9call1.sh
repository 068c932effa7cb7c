#!/usr/bin/env bash
# Session 9 call 1: split-K conv: build, conv tests, sweep of every config x split over the SD convs.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$?"; tail -2 /tmp/r/build.log
for f in /tmp/qe-build/qengine_kernels/csrc_conv_sm90_*.o; do echo "$(basename $f): $(cuobjdump --dump-resource-usage $f 2>&1 | grep -oE "REG:[0-9]+ STACK:[0-9]+ SHARED:[0-9]+" | sort -u | tr "\n" " ")"; done
timeout 150 python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_conv_kernels.py > /tmp/r/conv_tests.log 2>&1; echo "conv tests rc=$?"; tail -3 /tmp/r/conv_tests.log
timeout 300 python3 benchmarks/bench_conv.py --sweep-configs --sweep-splits 1 2 3 4 8 --reps 10 --no-plot --out-dir /tmp/r/sweep > /tmp/r/sweep.log 2>&1; echo "sweep rc=$?"
python3 - <<'PY'
import json
rows = json.load(open('/tmp/r/sweep/bench_conv.json'))['rows']
for r in rows:
    sw = {k.split('[')[1][:-1]: v for k, v in r.items() if k.startswith('int8_static_us[')}
    best = min(sw, key=sw.get) if sw else '-'
    h = r['int8_config']
    print(f"{r['shape'][:34]:34s} b{r['batch']} M{r['M']} N{r['N']} K{r['K']} cudnn {r['cudnn_bf16_us']:7.1f} int8st {r['int8_static_us']:7.1f} "
          f"({r['int8_static_vs_cudnn']:.2f}x) fp8st {r['fp8_static_us']:7.1f} ({r['fp8_static_vs_cudnn']:.2f}x) heur {h} {sw.get(h,'?')} best {best} {sw.get(best,'-')}")
PY
tar -C /tmp -cJf $OUT/s9call1.tar.xz r
