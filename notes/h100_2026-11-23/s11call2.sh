#!/usr/bin/env bash
# Session 11 call 2, the committed conv code (clustered 256x128 split plans for the 1280-channel
# convs at 32x32): conv tests, the conv benchmark over every SD1.5/SDXL conv, the issue-6 bar
# shapes at batch 1 and 2 (twice: cuDNN's own time moves between runs).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
mkdir -p /tmp/r
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=/tmp/r/gc tools/gpu_check.sh build > /tmp/r/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; tail -1 /tmp/r/build.log
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_conv_kernels.py > /tmp/r/conv_tests.log 2>&1; echo "conv tests rc=$? at $((SECONDS-t0))s"; grep -E "^FAILED|^ERROR|passed|failed" /tmp/r/conv_tests.log | head -8
timeout 200 python3 benchmarks/bench_conv.py --reps 20 --no-plot --out-dir /tmp/r/conv > /tmp/r/bench_conv.log 2>&1; echo "bench_conv rc=$? at $((SECONDS-t0))s"
for i in 1 2; do
  timeout 60 python3 benchmarks/bench_conv.py --models sdxl --only 'sdxl:64x64x640->640 k3s1' 'sdxl:32x32x1280->1280 k3s1' --batch 1 2 --reps 20 --no-plot --out-dir /tmp/r/conv_bar$i > /tmp/r/bench_conv_bar$i.log 2>&1; echo "bench_conv bar $i rc=$? at $((SECONDS-t0))s"
done
python3 - <<'PY'
import json
for f in ('/tmp/r/conv/bench_conv.json', '/tmp/r/conv_bar1/bench_conv.json', '/tmp/r/conv_bar2/bench_conv.json'):
    try:
        for r in json.load(open(f))['rows']:
            if r['shape'].split(':')[1] in ('64x64x640->640 k3s1', '32x32x1280->1280 k3s1') and r['model'] == 'sdxl':
                print(f"{f.split('/')[3]:9s} {r['shape'][:32]:32s} b{r['batch']} cudnn {r['cudnn_bf16_us']:7.1f} int8 {r['int8_static_us']:6.1f} dyn/st {r['int8_vs_cudnn']:.2f}/{r['int8_static_vs_cudnn']:.2f} fp8 {r['fp8_static_us']:6.1f} {r['fp8_vs_cudnn']:.2f}/{r['fp8_static_vs_cudnn']:.2f} {r['int8_config']}")
    except Exception as e:
        print(f, e)
rows = json.load(open('/tmp/r/conv/bench_conv.json'))['rows']
for m in ('sd1.5', 'sdxl'):
    for k in ('int8', 'fp8'):
        rr = [r for r in rows if r['model'] == m and r['batch'] == 1]
        print(m, k, 'count-weighted static us', round(sum(r[f'{k}_static_us'] * r['count'] for r in rr), 1), 'cudnn', round(sum(r['cudnn_bf16_us'] * r['count'] for r in rr), 1))
PY
rm -rf /tmp/r/gc/so; tar -C /tmp -cJf $OUT/s11call2.tar.xz r
