#!/usr/bin/env bash
# Session 25 call 9: the committed code again (call 6's .so, same sources): the W4A8 model-shape
# table twice and the FLUX.1-dev step (5 modes), for the run-to-run spread of the bars.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e9; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
for i in 1 2; do
  timeout 100 python3 benchmarks/bench_w4a8.py --no-m-sweep --reps 15 --out-dir $R/w4a8_$i > $R/bench_$i.log 2>&1; echo "bench $i rc=$? at $((SECONDS-t0))s"
  [[ -f $R/w4a8_$i/bench_w4a8.md ]] && grep flux1-dev $R/w4a8_$i/bench_w4a8.md | cut -d'|' -f2,3,5,7,8,9,10,16
done
left=$((570 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 fp8 fp8-lr32 w4a8 w4a8-lr32 --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cut -d'|' -f2-5,12,15 $R/pipe/bench_pipeline.md || tail -5 $R/pipe.log
tar -C /tmp --exclude=e9/gc -cJf $OUT/e9.tar.xz e9
