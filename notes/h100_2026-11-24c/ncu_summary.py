"""Summarises an ncu --csv dump (stdin) as one row per metric, one column per profiled launch:
kernel time, instructions, and the stall-reason samples above 100. Shared by this session's
device scripts (the twentieth session's repeated it inline in each)."""
import collections
import csv
import sys

lines = sys.stdin.read().splitlines()
header = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))  # after ncu's and the app's own output
t = collections.defaultdict(dict)
ids = []
for r in csv.DictReader(lines[header:]):
    try:
        v = float(r["Metric Value"].replace(",", ""))
    except ValueError:
        continue
    t[r["Metric Name"]][r["ID"]] = v
    if r["ID"] not in ids:
        ids.append(r["ID"])
for name in sorted(t):
    vals = [t[name].get(i, float("nan")) for i in ids]
    if name.endswith("not_issued") or max(vals) < 100:
        continue
    label = name.replace("smsp__pcsamp_warps_issue_stalled_", "")
    print(f"{label:40s}", " ".join(f"{v:10.0f}" for v in vals))
