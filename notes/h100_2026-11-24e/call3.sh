#!/usr/bin/env bash
# Session 23 call 3 (call 1's .so: 16 x w widening, CUTLASS's loop): ncu of W4A8 (128x256
# cooperative) vs W8A8 INT8 at 4608x3072->12288 and 4608x3072->3072, clocks as found.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/e3; mkdir -p $R
t0=$SECONDS
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "build:|error" $R/build.log | head -5
timeout 400 ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 4 --launch-count 4 \
  --section SpeedOfLight --section ComputeWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
  --section InstructionStats --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats --section SourceCounters \
  --metrics gpu__time_duration.sum,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,sm__cycles_active.avg,smsp__inst_executed.sum \
  -o $R/large python3 notes/h100_2026-11-24e/ncu_large.py > $R/ncu.log 2>&1; echo "ncu rc=$? at $((SECONDS-t0))s"; tail -3 $R/ncu.log
ncu --import $R/large.ncu-rep --page details --csv > $R/details.csv 2>&1
ncu --import $R/large.ncu-rep --page raw --csv > $R/raw.csv 2>&1
for id in 1 3; do ncu --import $R/large.ncu-rep --page source --print-source sass --csv --launch-skip $id --launch-count 1 > $R/sass_$id.csv 2>/dev/null; done
grep -E '"(Duration|Compute \(SM\) Throughput|Issue Slots Busy|Executed Ipc Active|No Eligible|Warp Cycles Per Issued Instruction|Registers Per Thread|Grid Size)"' $R/details.csv | cut -d, -f1,5,12- | cut -c1-160
tar -C /tmp --exclude=e3/gc -cJf $OUT/e3.tar.xz e3
