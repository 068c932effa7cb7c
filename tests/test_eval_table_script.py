"""scripts/eval_table.sh's orchestration (row groups, job slots, failure report, merge) with a fake
`qengine eval` standing in for the real one: the real rows take a GPU and minutes each."""
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "eval_table.sh"

# Logs each call (its arguments and how many calls run at that moment), fails for `--model unet
# --schemes w4a4`, and writes a results.md for --merge.
FAKE = r"""#!/usr/bin/env bash
log="$FAKE_LOG"
args="$*"
out="${@: -1}"
if [[ "$args" == *"--merge"* ]]; then mkdir -p "$out"; echo "| merged |" > "$out/results.md"; exit 0; fi
mkdir "$log.lock.$$" && running=$(ls -d "$log".lock.* | wc -l)
echo "$running|$args" >> "$log"
sleep 0.3
rmdir "$log.lock.$$"
[[ "$args" == *"--model unet --schemes w4a4"* ]] && exit 3
exit 0
"""


@pytest.fixture()
def fake(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    py = tmp_path / "fakepy"
    py.write_text(FAKE)
    py.chmod(0o755)
    return py


def _run(fake, tmp_path, **env):
    log = tmp_path / "calls.log"
    e = {**os.environ, "PYTHON": str(fake), "FAKE_LOG": str(log), **env}
    p = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=e, capture_output=True, text=True, timeout=120)
    calls = [line.split("|", 1) for line in log.read_text().splitlines()] if log.exists() else []
    return p, [(int(n), a) for n, a in calls]


def test_parts_select_row_groups_and_failures_are_listed(fake, tmp_path):
    p, calls = _run(fake, tmp_path, PARTS="a c", MODELS="unet", SCHEMES="w8a8-fp8 w4a4", JOBS="8")
    methods = [a.split("--methods ")[1].split(" --out")[0] for _, a in calls if "--methods fp" not in a]
    assert sorted(methods) == sorted(["naive calibrated", "no-mixed-precision no-gptq"] * 2)  # no part b
    assert p.returncode == 1  # unet w4a4 failed: the run says so, after merging what finished
    assert "FAILED" in p.stdout and "unet-w4a4-a" in p.stdout and "unet-w4a4-c" in p.stdout
    assert "unet-w8a8-fp8" not in p.stdout.split("FAILED")[1]
    assert (tmp_path / "out" / "all" / "results.md").exists()


def test_jobs_bounds_the_processes_running_at_once(fake, tmp_path):
    p, calls = _run(fake, tmp_path, MODELS="dit", SCHEMES="w8a8-int8 w8a8-fp8 w4a8", JOBS="2")
    rows = [(n, a) for n, a in calls if "--methods fp" not in a]
    assert len(rows) == 9  # 3 schemes x 3 parts
    assert max(n for n, _ in rows) <= 2
    assert p.returncode == 0, p.stdout + p.stderr
