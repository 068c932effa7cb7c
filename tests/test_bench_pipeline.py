"""The end-to-end benchmark harness (benchmarks/bench_pipeline.py) on tiny models, on CPU: it
runs every mode family, writes its tables, resumes, and its figures mean what they say."""
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_pipeline  # noqa: E402

from qengine.nn.quantize_weight import lowrank_split  # noqa: E402


def _rows(out: Path):
    return json.loads((out / "bench_pipeline.json").read_text())["rows"]


def test_tiny_run_writes_rows_with_sqnr_and_size(tmp_path):
    args = ["--tiny", "--device", "cpu", "--reps", "1", "--warmup", "1", "--models", "flux1-dev",
            "--modes", "bf16", "fp8", "int8-lr32", "--out-dir", str(tmp_path)]
    assert bench_pipeline.main(args) == 0
    rows = _rows(tmp_path)
    assert {(r["model"], r["mode"]) for r in rows} == {("flux1-dev", x) for x in ("bf16", "fp8", "int8-lr32")}
    for r in rows:
        assert r["ms_median"] > 0 and r["weights_MiB"] > 0
        if r["mode"] != "bf16":
            # quantized modes hold fewer bytes and stay close to the bf16 output on the same inputs
            assert r["weights_vs_bf16"] < 1.0
            assert 15.0 < r["sqnr_db_vs_bf16"] < 80.0
            assert r["speedup_vs_bf16"] > 0
    int8 = {r["model"]: r["sqnr_db_vs_bf16"] for r in rows if r["mode"] == "int8-lr32"}
    fp8 = {r["model"]: r["sqnr_db_vs_bf16"] for r in rows if r["mode"] == "fp8"}
    assert all(int8[m] > fp8[m] for m in int8), "INT8 + low-rank should beat FP8 (3 mantissa bits) on SQNR"
    for ext in ("csv", "md"):
        assert (tmp_path / f"bench_pipeline.{ext}").stat().st_size > 0

    # --resume keeps the rows and runs only what is missing
    before = len(rows)
    assert bench_pipeline.main(args[:-2] + ["--out-dir", str(tmp_path), "--resume", "--models", "flux1-dev",
                                            "--modes", "bf16", "fp8"]) == 0
    assert len(_rows(tmp_path)) == before


def test_mod_mode_quantizes_the_modulation_too(tmp_path):
    args = ["--tiny", "--device", "cpu", "--reps", "1", "--warmup", "1", "--models", "flux1-dev",
            "--modes", "w4a8", "w4a8-mod", "--out-dir", str(tmp_path)]
    assert bench_pipeline.main(args) == 0
    rows = {r["mode"]: r for r in _rows(tmp_path)}
    assert rows["w4a8-mod"]["weights_MiB"] < rows["w4a8"]["weights_MiB"]
    assert 10.0 < rows["w4a8-mod"]["sqnr_db_vs_bf16"] < 80.0


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown mode"):
        bench_pipeline.Mode.parse("fp4")
    with pytest.raises(SystemExit, match="suffix"):
        bench_pipeline.Mode.parse("fp8+eager")
    m = bench_pipeline.Mode.parse("fp8+graph")
    assert (m.base, m.compile, m.graph) == ("fp8", False, True)
    assert bench_pipeline.Mode.parse("bf16+compile").compile
    m = bench_pipeline.Mode.parse("fp8+compile+graph")
    assert (m.base, m.compile, m.graph) == ("fp8", True, True)
    with pytest.raises(SystemExit, match="suffix"):
        bench_pipeline.Mode.parse("fp8+graph+compile")


def test_randomized_lowrank_split_matches_exact_on_a_decaying_spectrum():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(300, 48, generator=g), torch.randn(48, 400, generator=g)
    w = u @ torch.diag(torch.logspace(1, -1, 48)) @ v / 20 + 0.01 * torch.randn(300, 400, generator=g)
    res = {}
    for method in ("exact", "randomized"):
        down, up = lowrank_split(w, 16, method)
        assert down.shape == (16, 400) and up.shape == (300, 16)
        res[method] = ((w - up @ down).norm() / w.norm()).item()
    assert res["randomized"] <= res["exact"] * 1.01
    assert res["exact"] < 0.5
    with pytest.raises(ValueError, match="method"):
        lowrank_split(w, 16, "qr")


def test_a_timed_out_mode_keeps_its_stderr(tmp_path, monkeypatch):
    import subprocess
    from types import SimpleNamespace

    def killed(cmd, **kw):
        assert cmd[cmd.index("--compile-scope") + 1] == "model"  # the worker compiles what the parent was asked for
        raise subprocess.TimeoutExpired(cmd, kw["timeout"], output=b"", stderr=b"warm-up call 1/3 done at 300.0s\n")
    monkeypatch.setattr(subprocess, "run", killed)
    args = SimpleNamespace(reps=1, warmup=1, device="cpu", steps=1, out_dir=tmp_path, tiny=True, denoise_memory=False,
                           mode_timeout=5.0, compile_cache=None, lowrank_cat_down=None,
                           compiled_quantize=None, compile_scope="model")
    row = bench_pipeline.spawn_worker(args, "sdxl", "torchao-fp8+compile", None, tmp_path / "ref.pt")
    log = tmp_path / "errors" / "sdxl_torchao-fp8_compile.log"
    assert row["error"].startswith("timed out after 5s") and str(log) in row["error"]
    assert "warm-up call 1/3 done" in log.read_text()


@pytest.mark.parametrize("scope", ["blocks", "model"])
def test_compile_scope_picks_what_is_compiled(scope):
    cpu = torch.device("cpu")
    model = bench_pipeline.build_model("sdxl", True, cpu, torch.float32)
    out = bench_pipeline.apply_mode(model, "sdxl", bench_pipeline.Mode.parse("bf16+compile"), cpu, scope)
    compiled = [type(m).__name__ for m in out.modules() if getattr(m, "_compiled_call_impl", None) is not None]
    if scope == "model":
        assert compiled == [type(out).__name__]  # one graph, no block compiled on its own
    else:
        assert compiled and set(compiled) <= set(bench_pipeline.COMPILE_BLOCKS)
        assert "ResnetBlock2D" in compiled and type(out).__name__ not in compiled


@pytest.mark.parametrize("mode,tuned", [("torchao-fp8+compile", True), ("torchao-fp8-notune", False)])
def test_torchao_modes_choose_torchaos_inductor_config(monkeypatch, mode, tuned):
    """torchao-fp8 is what a torchao user writes (quantize_ keeps its default set_inductor_config=True,
    which turns on coordinate-descent tuning); -notune passes False. Checked against a stand-in
    torchao module: the real one needs a GPU for FP8."""
    import sys
    import types

    seen = {}

    class Config:
        def __init__(self, granularity=None, set_inductor_config=True):
            seen["set_inductor_config"] = set_inductor_config

    def quantize_(model, config, filter_fn):
        seen["linears"] = sum(filter_fn(m, n) for n, m in model.named_modules())

    fake = types.ModuleType("torchao.quantization")
    fake.Float8DynamicActivationFloat8WeightConfig, fake.PerRow, fake.quantize_ = Config, object, quantize_
    monkeypatch.setitem(sys.modules, "torchao", types.ModuleType("torchao"))
    monkeypatch.setitem(sys.modules, "torchao.quantization", fake)
    cpu = torch.device("cpu")
    model = bench_pipeline.build_model("sdxl", True, cpu, torch.float32)
    parsed = bench_pipeline.Mode.parse(mode)
    monkeypatch.setattr(parsed, "compile", False)  # only the quantization step is under test
    bench_pipeline.apply_mode(model, "sdxl", parsed, cpu)
    assert seen["set_inductor_config"] is tuned
    assert seen["linears"] > 0


def test_unknown_torchao_mode_names_the_choices():
    with pytest.raises(SystemExit, match="torchao-fp8-notune"):
        bench_pipeline.Mode.parse("torchao-fp9")


def test_qkv_modes_fuse_in_every_mode_family_and_compare_like_for_like(tmp_path):
    m = bench_pipeline.Mode.parse("fp8-qkv+compile+graph")
    assert (m.base, m.fuse_qkv, m.compile, m.graph) == ("fp8", True, True, True)
    assert m.like("bf16") == "bf16-qkv+compile+graph" and not bench_pipeline.Mode.parse("fp8").fuse_qkv
    cpu = torch.device("cpu")
    for mode in ("bf16-qkv", "fp8-qkv"):
        model = bench_pipeline.build_model("sd15", True, cpu, torch.float32)
        bench_pipeline.apply_mode(model, "sd15", bench_pipeline.Mode.parse(mode), cpu)
        names = [n for n, _ in model.named_modules()]
        assert any(n.endswith("attn1.to_qkv") for n in names) and not any(n.endswith("attn1.to_q") for n in names)
    rows = [{"model": "sd15", "mode": x, "ms_median": t, "weights_MiB": 1.0}
            for x, t in (("bf16", 8.0), ("bf16-qkv+graph", 4.0), ("fp8-qkv+graph", 2.0), ("fp8+graph", 3.0))]
    bench_pipeline.add_ratios(rows)
    by = {r["mode"]: r for r in rows}
    assert by["fp8-qkv+graph"]["speedup_vs_bf16_like"] == 2.0 and by["fp8-qkv+graph"]["speedup_vs_bf16"] == 4.0
    assert "speedup_vs_bf16_like" not in by["fp8+graph"]  # no unfused bf16+graph row to compare with


def test_fold_modes_add_the_producer_fusions():
    m = bench_pipeline.Mode.parse("fp8-fold-qkv+compile+graph")
    assert (m.base, m.fold, m.fuse_qkv, m.compile, m.graph) == ("fp8", True, True, True, True)
    with pytest.raises(SystemExit, match="qengine modes only"):
        bench_pipeline.Mode.parse("bf16-fold")
    cpu = torch.device("cpu")
    for mode, folded in (("fp8-qkv", False), ("fp8-fold-qkv", True)):
        model = bench_pipeline.build_model("sdxl", True, cpu, torch.float32)
        bench_pipeline.apply_mode(model, "sdxl", bench_pipeline.Mode.parse(mode), cpu)
        assert any(getattr(x, "_pre_norm", None) is not None for x in model.modules()) == folded
        assert any(hasattr(x, "_qengine_gelu_cat") for x in model.modules()) == folded


def test_nores_modes_run_the_resnets_unfused():
    m = bench_pipeline.Mode.parse("fp8-nores-static-qkv+compile+graph")
    assert (m.base, m.nores, m.static, m.fuse_qkv) == ("fp8", True, True, True)
    with pytest.raises(SystemExit, match="qengine modes only"):
        bench_pipeline.Mode.parse("bf16-nores")
    cpu = torch.device("cpu")
    for mode, fused in (("fp8", True), ("fp8-nores", False)):
        model = bench_pipeline.build_model("sdxl", True, cpu, torch.float32)
        bench_pipeline.apply_mode(model, "sdxl", bench_pipeline.Mode.parse(mode), cpu)
        resnets = [x for x in model.modules() if type(x).__name__ == "ResnetBlock2D"]
        assert resnets and all(hasattr(x, "_qengine_resnet_fused") == fused for x in resnets)
        assert all(("forward" in vars(x)) == fused for x in resnets)


def test_profile_step_sorts_kernels_into_categories():
    import profile_step

    cat = profile_step.kernel_category
    assert cat("_ZN7cutlass13device_kernelIN7qengine9conv_sm908Sm90OnlyINS2_10SplitKConvIJNS_14QuantizedAct") == "qengine conv"
    assert cat("void qengine::(anonymous namespace)::quantize_rows_kernel<__nv_bfloat16>") == "qengine quantize"
    assert cat("_ZN7cutlass13device_kernelIN7qengine4sm908Sm90OnlyINS_4gemm6kernel13GemmUniversal") == "qengine gemm"
    assert cat("void qengine::(anonymous namespace)::gn_apply_kernel<__nv_bfloat16, 8>") == "qengine norm"
    assert cat("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTN") == "cuBLAS / other GEMM"
    assert cat("triton_red_fused_add_native_layer_norm_3") == "triton (inductor)"
    assert cat("cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16") == "attention"
    assert profile_step.is_annotation("## Call CompiledFxGraph fz6al3 ##")
    assert not profile_step.is_annotation("triton_poi_fused_gelu_mul_7")
