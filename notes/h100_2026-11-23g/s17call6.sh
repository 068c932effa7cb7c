#!/usr/bin/env bash
# Session 17 call 6: where the few-token W4A8 kernels spend a 3072x3072 GEMM. ncu (clocks as
# found) of the 64x64x128 ping-pong W4A8 kernel and our W8A8 INT8 kernel at 64 tokens, and the
# split-K W4A8 kernel at 1 and 32 tokens: duration, cycles, occupancy and warp stall reasons.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r6; mkdir -p $R
OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$?"; head -2 $R/build.log
cat > $R/k.py <<'PY'
import torch, qengine
from qengine import _extension
from qengine.formats import pack_int4
from qengine.formats.w4a8_layout import prepack
ext = _extension.load_extension()
q = torch.ops.qengine
d = "cuda"
w4 = prepack(pack_int4(torch.randint(-8, 8, (3072, 3072), device=d, dtype=torch.int8)))
w8 = torch.randint(-127, 128, (3072, 3072), device=d, dtype=torch.int8)
s_w = torch.rand(3072, 1, device=d)  # W4A8 takes [N, 1], W8A8 [N]
for m, cfg in ((64, "sm90_64x64x128_pingpong"), (64, None), (1, "sm90_mma_128x64x128_splitk"), (32, "sm90_mma_128x64x128_splitk")):
    a = torch.randint(-127, 128, (m, 3072), device=d, dtype=torch.int8)
    s_a = torch.rand(m, device=d)
    for _ in range(2):
        if cfg is None:
            q.w8a8_int8_gemm(a, s_a, w8, s_w.view(-1), None, None, None, torch.bfloat16)
        else:
            ext.w4a8_gemm_with_config(a, s_a, w4, s_w, None, None, None, "bfloat16", cfg)
torch.cuda.synchronize()
PY
timeout 400 ncu --clock-control none --kernel-name regex:"device_kernel|splitk" --launch-count 8 --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" --csv python3 $R/k.py > $R/ncu_raw.csv 2> $R/ncu.err; echo "ncu rc=$?"
grep -v "^==" $R/ncu_raw.csv > $R/ncu.csv
python3 - <<'PY'
import csv, collections
rows = list(csv.DictReader(open("/tmp/r6/ncu.csv")))
by = collections.defaultdict(dict)
names = {}
for r in rows:
    by[r["ID"]][r["Metric Name"]] = (r["Metric Value"], r["Metric Unit"])
    k = r["Kernel Name"]
    names[r["ID"]] = ("splitk" if "splitk" in k else "mixed-input(w4a8)" if "MixedInput" in k else "w8a8") + " grid" + r["Grid Size"] + " blk" + r["Block Size"]
keep = ("Duration", "Elapsed Cycles", "SM Active Cycles", "Achieved Occupancy", "Theoretical Occupancy", "Registers Per Thread",
        "Issue Slots Busy", "Warp Cycles Per Issued Instruction", "Active Warps Per Scheduler", "Eligible Warps Per Scheduler",
        "No Eligible", "Dynamic Shared Memory Per Block", "Cluster Size")
for i in sorted(by, key=int):
    print(i, names[i], "; ".join(f"{k}={by[i][k][0]}{by[i][k][1] and ' ' + by[i][k][1]}" for k in keep if k in by[i]))
for i in sorted(by, key=int):
    st = sorted(((k.replace("smsp__average_warps_issue_stalled_", "").replace("_per_issue_active.ratio", ""), float(v[0].replace(",", "")))
                 for k, v in by[i].items() if "issue_stalled" in k), key=lambda x: -x[1])
    print(i, names[i], [(k, round(v, 2)) for k, v in st[:7]])
PY
tar -C /tmp --exclude=r6/gc -cJf $OUT/r6.tar.xz r6
