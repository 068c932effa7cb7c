#!/usr/bin/env bash
# Session 20 call 6 (diagnostic; patched here, not in the repository; results wrong by design):
# calls 1-3's producer-load node (producer_staging.patch) with both its producer and consumer
# work removed: what is left is the collective's epilogue-load pipeline that
# is_producer_load_needed() switches on (a producer-load warp acquiring and committing a stage
# per subtile, the consumers waiting on and releasing each). ncu times of plain / staged /
# product path at 4608x3072->12288.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
R=/tmp/r6; mkdir -p $R
t0=$SECONDS
git apply notes/h100_2026-11-24b/producer_staging.patch || { echo "patch failed"; exit 1; }
python3 - <<'PY'
p = "csrc/w4a8/sm90/lowrank_staged_epilogue.cuh"
s = open(p).read()
for key in ("    CUTLASS_DEVICE void begin() {\n", "    CUTLASS_DEVICE void previsit(int epi_m, int epi_n, int, bool) {\n"):
    assert s.count(key) == 1, key
    s = s.replace(key, key + "      if (params.rank >= 0) return;\n")
open(p, "w").write(s)
PY
BUILD_TEMP=/tmp/qe-build ARCHS=90a OUT=$R/gc tools/gpu_check.sh build > $R/build.log 2>&1; echo "build rc=$? at $((SECONDS-t0))s"; grep -E "error" $R/build.log | head
left=$((585 - SECONDS + t0))
timeout $left ncu --clock-control none --kernel-name regex:"device_kernel" --launch-skip 3 --launch-count 3 --metrics "gpu__time_duration.sum,smsp__inst_executed.avg,regex:smsp__pcsamp_warps_issue_stalled_.*" --csv python3 notes/h100_2026-11-24b/ncu_lowrank.py > $R/ncu.csv 2> $R/ncu.err; echo "ncu rc=$? at $((SECONDS-t0))s"
grep -v "^==" $R/ncu.csv | python3 -c "
import csv, sys, collections
t = collections.defaultdict(dict)
for r in csv.DictReader(sys.stdin):
    try: v = float(r['Metric Value'].replace(',', ''))
    except ValueError: continue
    t[r['Metric Name']][r['ID']] = v
for name in sorted(t):
    vals = [t[name].get(i, float('nan')) for i in ('0', '1', '2')]
    if name.endswith('not_issued') or max(vals) < 100: continue
    print(f'{name.replace(\"smsp__pcsamp_warps_issue_stalled_\", \"\"):40s}', ' '.join(f'{v:10.0f}' for v in vals))
"
tar -C /tmp --exclude=r6/gc -cJf $OUT/r6.tar.xz r6
