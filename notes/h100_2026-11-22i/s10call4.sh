#!/usr/bin/env bash
# Session 10 call 4: validation sweeps for the 256-row conv tiles (every config x split), on
# shapes call 3 did not time: SD1.5 3x3 (batch 1, 2), SDXL 3x3 at batch 2, SDXL 1x1 at batch 1.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r/build.log
B="python3 benchmarks/bench_conv.py --sweep-configs --sweep-splits 1 2 3 4 --reps 8 --no-plot"
timeout $((560 - SECONDS)) $B --models sd15 --only k3 --batch 1 2 --out-dir /tmp/r/sd15 > /tmp/r/sd15.log 2>&1; echo "sd15 rc=$? at $((SECONDS-t0))s"
timeout $((560 - SECONDS)) $B --models sdxl --only k3 --batch 2 --out-dir /tmp/r/sdxl_b2 > /tmp/r/sdxl_b2.log 2>&1; echo "sdxl b2 rc=$? at $((SECONDS-t0))s"
timeout $((585 - SECONDS)) $B --models sdxl --only k1 --batch 1 --out-dir /tmp/r/sdxl_k1 > /tmp/r/sdxl_k1.log 2>&1; echo "sdxl k1 rc=$? at $((SECONDS-t0))s"
for d in sd15 sdxl_b2 sdxl_k1; do python3 -c "import json; print('$d', len(json.load(open('/tmp/r/$d/bench_conv.json'))['rows']), 'rows')" 2>/dev/null; done
rm -rf /tmp/r/gc/so; tar -C /tmp -cJf $OUT/s10call4.tar.xz r
