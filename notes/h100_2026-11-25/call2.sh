#!/usr/bin/env bash
# Session 26 call 2: FLUX's q/k/v projections fused (QuantConfig.fuse_qkv now covers FluxAttention:
# to_qkv, to_added_qkv). Build (session 25's objects carried: nothing recompiles but the link);
# the W4A8 table at the model shapes plus the fused ones (4608/4096/512 x 3072 -> 9216); the
# FLUX.1-dev step, unfused and fused, bf16 / FP8 / W4A8 with and without the rank-32 branch.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e2; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc timeout 300 tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error|rc=" $R/build.log | head -10
timeout 100 python3 benchmarks/bench_w4a8.py --no-m-sweep --shapes 4608x3072x9216 4096x3072x9216 512x3072x9216 --reps 15 --out-dir $R/w4a8 > $R/bench.log 2>&1; echo "bench rc=$? at $((SECONDS-t0))s"
[[ -f $R/w4a8/bench_w4a8.md ]] && cut -d'|' -f2,3,5,7,8,9,10,11,16 $R/w4a8/bench_w4a8.md | head -14
left=$((585 - SECONDS + t0))
timeout $left python3 benchmarks/bench_pipeline.py --models flux1-dev --modes bf16 bf16-qkv fp8 fp8-qkv fp8-lr32 fp8-lr32-qkv w4a8 w4a8-qkv w4a8-lr32 w4a8-lr32-qkv --reps 10 --out-dir $R/pipe > $R/pipe.log 2>&1; echo "pipeline rc=$? at $((SECONDS-t0))s"
rm -f $R/pipe/ref_*.pt
[[ -f $R/pipe/bench_pipeline.md ]] && cut -d'|' -f2-5,12,15,16 $R/pipe/bench_pipeline.md || tail -5 $R/pipe.log
tar -C /tmp --exclude=e2/gc -cJf $OUT/e2.tar.xz e2
