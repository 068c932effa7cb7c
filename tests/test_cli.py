"""The qengine command line: info and quantize, on a real diffusers model folder."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import qengine
from qengine.cli import main
from qengine.integrations.tiny_models import build_tiny


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "qengine.cli", *args], capture_output=True, text=True)


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["qengine"] == qengine.__version__
    assert info["backend"].startswith("reference") or info["compiled_archs"]


def test_help_on_every_command():
    for args in ([], ["info"], ["quantize"]):
        r = run_cli(*args, "--help")
        assert r.returncode == 0 and "usage: qengine" in r.stdout


def test_quantize_a_model_folder_then_load(tmp_path, capsys):
    model, sample = build_tiny("dit")
    model.save_pretrained(tmp_path / "dit")
    assert main(["quantize", str(tmp_path / "dit"), "--preset", "w8a8-int8", "--dtype", "fp32", "--quiet",
                 "--out", str(tmp_path / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert "linear w8a8-int8" in out and "checkpoint written to" in out
    fresh, _ = build_tiny("dit", seed=5)
    qengine.load(fresh, tmp_path / "ckpt")
    expected = qengine.quantize(model, "w8a8-int8")
    assert torch.equal(sample(fresh), sample(expected))


def test_quantize_a_pipeline_folder(tmp_path, capsys):
    model, _ = build_tiny("unet2d_condition")
    model.save_pretrained(tmp_path / "pipe" / "unet")
    (tmp_path / "pipe" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    assert main(["quantize", str(tmp_path / "pipe"), "--preset", "w4a8", "--quiet",
                 "--out", str(tmp_path / "ckpt")]) == 0
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["architecture"] == "UNet2DConditionModel"
    # --fuse-qkv: the checkpoint holds the fused projections and says so
    assert main(["quantize", str(tmp_path / "pipe"), "--preset", "w8a8-fp8", "--fuse-qkv", "--quiet",
                 "--out", str(tmp_path / "fused")]) == 0
    meta = json.loads((tmp_path / "fused" / "config.json").read_text())
    assert meta["quant_config"]["fuse_qkv"] is True
    assert any(n.endswith("attn1.to_qkv") for n in meta["layers"]) and not any(n.endswith("attn1.to_q") for n in meta["layers"])


def test_quantize_errors_name_the_problem(tmp_path):
    r = run_cli("quantize", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert r.returncode != 0 and "has no config.json" in r.stderr
    r = run_cli("quantize", str(tmp_path), "--preset", "int3", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "invalid choice: 'int3'" in r.stderr
    assert not (tmp_path / "o").exists()


def test_calibrate_with_static_scales_keeps_the_searched_conv_scales(tmp_path, capsys):
    from qengine.calib import CalibrationResult
    from qengine.models import reference as ref
    from qengine.nn import QConv2d

    if not (Path(ref.MODELS_DIR) / "fashion-unet" / "config.json").is_file():
        pytest.skip(f"the shipped fashion-unet is not in {ref.MODELS_DIR}")
    assert main(["calibrate", "unet", "--preset", "w8a8-fp8", "--per-class", "1", "--steps", "2", "--quiet",
                 "--out", str(tmp_path / "c.safetensors"), "--checkpoint", str(tmp_path / "ckpt"),
                 "--static-scales"]) == 0
    assert "kept from the search" in capsys.readouterr().out
    res = CalibrationResult.load(tmp_path / "c.safetensors")
    searched = {n: lc["input_scale"] for n, lc in res.layers.items() if lc.get("input_scale") is not None}
    assert searched  # the search made some conv scales static
    model = qengine.load(ref.load_denoiser("unet"), tmp_path / "ckpt")
    convs = {n: m for n, m in model.named_modules() if isinstance(m, QConv2d)}
    assert all(m.input_scale is not None for m in convs.values())  # the rest were measured
    for name, scale in searched.items():
        assert torch.equal(convs[name].input_scale.cpu(), scale.reshape(convs[name].input_scale.shape).float())


def test_static_scales_need_a_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match="--static-scales needs --checkpoint"):
        main(["calibrate", "dit", "--static-scales", "--out", str(tmp_path / "c.safetensors")])
    assert not (tmp_path / "c.safetensors").exists()
