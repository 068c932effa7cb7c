"""bench_w4a8.py's command line (the GPU timing itself runs on the device machine)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_w4a8  # noqa: E402


def test_extra_shapes_parse_as_m_k_n():
    assert bench_w4a8.parse_shape("4608x3072x9216") == (4608, 3072, 9216)
    assert bench_w4a8.parse_shape("1X64X16") == (1, 64, 16)


@pytest.mark.parametrize("bad", ["4608x3072", "4608x3072x0", "ax3072x9216", "4608x-3072x9216", ""])
def test_bad_extra_shapes_are_refused_with_the_expected_form(bad):
    with pytest.raises(argparse.ArgumentTypeError, match="MxKxN"):
        bench_w4a8.parse_shape(bad)
