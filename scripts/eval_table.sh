#!/usr/bin/env bash
# The quality table of notes/calibration.md (and the README): every row of
#   qengine eval --model all --ablations --samples 5000 --device cuda
# (fp, naive and calibrated rows, and the ablations no-smoothing / no-lowrank / no-mixed-precision /
# no-gptq, for the DiT and the UNet and each of w8a8-int8, w8a8-fp8, w4a8, w4a4), with the defaults
# of `qengine eval`, computed as parallel processes on one GPU and merged into one table.
#
#   scripts/eval_table.sh OUT_DIR            # env: SAMPLES (5000), DEVICE (cuda), PYTHON (python),
#                                            # EVAL_ARGS (more `qengine eval` options, e.g. for a smoke test),
#                                            # MODELS, SCHEMES (subsets, space-separated),
#                                            # TIME_LIMIT (s: processes still running then are stopped; the
#                                            # rows they finished are kept, each process writes its report per row),
#                                            # PARTS (row groups: a = naive + calibrated, b = no-smoothing +
#                                            # no-lowrank, c = no-mixed-precision + no-gptq; default "a b c";
#                                            # a table over several calls: PARTS=a, then PARTS="b c" with the same
#                                            # OUT_DIR merges every row found there),
#                                            # OMP_NUM_THREADS (CPU threads per process, default 2: 24 processes
#                                            # with a thread per core each oversubscribe the CPU many times over),
#                                            # JOBS (quantized-row processes at once, default 8: on an 80 GB H100,
#                                            # 16 at once ran out of GPU memory when several reached FID together)
#
# Why parallel processes: the reference ops on these small models leave a GPU mostly idle, so 8
# processes side by side take little longer than one (on an H100: fp rows 52 s, then 8 processes of
# naive + calibrated rows 220 s; the whole table is 24 processes, 3 waves of JOBS=8). They share the
# full-precision samples and the FID reference statistics through OUT_DIR/cache (computed once per
# model first), so every row is scored against the same fp samples a single process would use.
set -euo pipefail
out=${1:?usage: scripts/eval_table.sh OUT_DIR}
samples=${SAMPLES:-5000}
device=${DEVICE:-cuda}
py=${PYTHON:-python}
schemes=(${SCHEMES:-w8a8-int8 w8a8-fp8 w4a8 w4a4})
models=(${MODELS:-dit unet})
parts=" ${PARTS:-a b c} "
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
jobs_max=${JOBS:-8}
mkdir -p "$out/logs"
t0=$(date +%s)
ev() { local left=$(( ${TIME_LIMIT:-1000000} - ($(date +%s) - t0) ))
       timeout $(( left > 1 ? left : 1 )) "$py" -c 'import sys; from qengine.cli import main; sys.exit(main())' eval --samples "$samples" \
          --device "$device" --cache "$out/cache" --quiet ${EVAL_ARGS:-} "$@"; }
fp_pids=()
for m in "${models[@]}"; do  # 1. fp samples and FID statistics once per model
  ev --model "$m" --schemes w8a8-int8 --methods fp --out "$out/$m-fp" >"$out/logs/$m-fp.log" 2>&1 &
  fp_pids+=($!)
done
for p in "${fp_pids[@]}"; do wait "$p" || { tail -5 "$out"/logs/*-fp.log; exit 1; }; done
echo "fp rows: $(( $(date +%s) - t0 )) s"
rm -f "$out/failed"
for m in "${models[@]}"; do  # 2. the quantized rows, three processes per model and scheme, JOBS at a time
  for s in "${schemes[@]}"; do
    for part in a b c; do
      [[ $parts == *" $part "* ]] || continue
      case $part in
        a) methods="naive calibrated" ;;
        b) methods="no-smoothing no-lowrank" ;;
        c) methods="no-mixed-precision no-gptq" ;;
      esac
      while (( $(jobs -rp | wc -l) >= jobs_max )); do wait -n || true; done
      ( ev --model "$m" --schemes "$s" --methods $methods --out "$out/$m-$s-$part" >"$out/logs/$m-$s-$part.log" 2>&1 ||
          echo "$m-$s-$part (log: $out/logs/$m-$s-$part.log)" >>"$out/failed" ) &
    done
  done
done
wait
echo "all rows: $(( $(date +%s) - t0 )) s"
TIME_LIMIT= ev --merge "$out"/*/results.json --out "$out/all" >/dev/null
cat "$out/all/results.md"
if [[ -s "$out/failed" ]]; then echo "FAILED (their finished rows are in the table):"; cat "$out/failed"; exit 1; fi
