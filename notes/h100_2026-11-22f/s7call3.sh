#!/usr/bin/env bash
# Session 7 call 3: ncu of the split-K kernel + SASS; honest (DRAM) small-M W4A8 benchmark.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$OUT tools/gpu_check.sh build 2>&1 | tail -2
mkdir -p /tmp/r
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
CUOBJ=$(command -v cuobjdump || ls /usr/local/cuda*/bin/cuobjdump 2>/dev/null | head -1)
echo "ncu=$NCU cuobjdump=$CUOBJ"
mkdir -p /tmp/k && xz -dc .sobuild/kernels.tar.xz | tar -C /tmp/k -xf - && OBJ=$(ls /tmp/k/qengine_kernels/*splitk*.o | head -1)
[[ -n "$CUOBJ" ]] && $CUOBJ -sass "$OBJ" > /tmp/r/splitk.sass 2>&1; wc -l /tmp/r/splitk.sass
if [[ -n "$NCU" ]]; then
  timeout 200 $NCU -k regex:w4a8_splitk -c 9 --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis python3 .sobuild/prof_splitk.py > /tmp/r/ncu.txt 2>&1; echo "ncu rc=$?"
  grep -E "w4a8_splitk|Duration|Memory Throughput|DRAM Throughput|Achieved Occupancy|Theoretical Occupancy|Stall|Registers Per|Block Limit|Warp Cycles Per Issued|Issue Slots Busy|Executed Ipc" /tmp/r/ncu.txt | head -90
fi
timeout 150 python3 benchmarks/bench_w4a8.py --no-model-shapes --m-sweep 1 16 32 64 --sweep-configs --reps 15 --out-dir /tmp/r/w4a8 > /tmp/r/bench_w4a8.log 2>&1; echo "bench_w4a8 rc=$?"
[[ -f /tmp/r/w4a8/bench_w4a8.md ]] && cut -d'|' -f2-7,10,11,15- /tmp/r/w4a8/bench_w4a8.md
tar -C /tmp -cJf $OUT/s7call3.tar.xz r
