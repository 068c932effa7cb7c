"""benchmarks/static_scale_quality.py end to end on a shipped trained model, at toy settings."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import static_scale_quality  # noqa: E402

from qengine.models import reference as ref  # noqa: E402


def test_static_scale_quality_reports_dynamic_and_static(tmp_path):
    if not (Path(ref.MODELS_DIR) / "fashion-unet" / "config.json").is_file():
        pytest.skip(f"the shipped fashion-unet is not in {ref.MODELS_DIR}")
    args = ["--models", "unet", "--schemes", "w8a8-int8", "--naive", "--per-class", "1", "--steps", "2",
            "--calib-per-class", "1", "--out-dir", str(tmp_path)]
    assert static_scale_quality.main(args) == 0
    rows = json.loads((tmp_path / "static_scale_quality.json").read_text())["rows"]
    (row,) = rows
    assert row["quantization"] == "naive" and row["samples"] == 10
    # the UNet's convs take static scales under the default rule; with every layer static the
    # INT8 linears do too, which changes the samples
    assert 10 < row["static_db"] < 80 and 10 < row["static_all_db"] < 80 and 10 < row["dynamic_db"] < 80
    assert row["static_all_db"] != row["static_db"]
    # naive quantization has no search, so no scale is kept; every layer is static in the last run
    assert int(row["static_layers"].split()[0]) > 0
    assert " + 0 kept static" in row["static_layers"] and row["static_all_layers"].endswith(", 0 dynamic")
    assert "| unet | w8a8-int8 | naive |" in (tmp_path / "static_scale_quality.md").read_text()
