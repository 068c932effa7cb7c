"""CPU tests of benchmarks/bench_conv.py's plumbing (the timing itself is bench_gemm's, tested in
test_bench_gemm.py): the swept plan names and the argument checks that run before any GPU work."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_conv  # noqa: E402


class FakeExt:
    """The two qengine._C entry points sweep_plans reads."""

    def __init__(self, configs, available):
        self._configs, self._available = configs, available

    def conv_configs(self):
        return list(self._configs)

    def conv_config_available(self, config, qdtype):
        return (config, qdtype) in self._available


def test_sweep_plans_names_each_sm90_config_per_split_count():
    ext = FakeExt(["sm90_128x128x128_s4", "sm90_64x160x128_s4", "im2col_gemm_sm80"],
                  {("sm90_128x128x128_s4", "int8"), ("sm90_64x160x128_s4", "int8"), ("im2col_gemm_sm80", "int8"),
                   ("sm90_128x128x128_s4", "float8_e4m3fn")})
    assert bench_conv.sweep_plans(ext, "int8", [1, 2, 4]) == [
        "sm90_128x128x128_s4", "sm90_64x160x128_s4",
        "sm90_128x128x128_s4_split2", "sm90_64x160x128_s4_split2",
        "sm90_128x128x128_s4_split4", "sm90_64x160x128_s4_split4"]
    # a config not compiled for the type is left out; the mma.sync fallback is never swept
    assert bench_conv.sweep_plans(ext, "float8_e4m3fn", [3]) == ["sm90_128x128x128_s4_split3"]
    assert bench_conv.sweep_plans(ext, "int8", []) == []


@pytest.mark.parametrize("bad", ["0", "17"])
def test_sweep_splits_out_of_range_is_refused_before_gpu_work(bad, capsys):
    with pytest.raises(SystemExit) as e:
        bench_conv.main(["--sweep-configs", "--sweep-splits", "1", bad])
    assert e.value.code == 2  # argparse's usage error, not the "needs a CUDA GPU" exit
    assert "--sweep-splits takes split counts 1..16" in capsys.readouterr().err
