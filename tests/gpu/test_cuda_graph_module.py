"""qengine.CUDAGraphModule on a GPU: a captured quantized model replays exactly what eager computes."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import qengine

pytestmark = pytest.mark.gpu

from gpu_helpers import require_extension  # noqa: E402

require_extension()


class Block(nn.Module):
    """Linear -> GELU -> linear with a kwarg and a nested-dict argument, like a denoiser's call."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(256, 512)
        self.fc2 = nn.Linear(512, 256)
        self.tag = "block"

    def forward(self, x, scale=1.0, *, extra=None):
        h = self.fc2(torch.nn.functional.gelu(self.fc1(x))) * scale
        if extra is not None:
            h = h + extra["bias"]
        return (h, h.sum(dim=-1))


def _model(scheme):
    torch.manual_seed(0)
    m = Block().cuda().to(torch.bfloat16).eval()
    return qengine.quantize(m, qengine.QuantConfig.preset(scheme, rank=0)) if scheme else m


@pytest.mark.parametrize("scheme", [None, "w8a8-fp8", "w8a8-int8", "w4a8"])
def test_replay_equals_eager_for_new_inputs(scheme):
    m = _model(scheme)
    g = qengine.CUDAGraphModule(m)
    bias = {"bias": torch.randn(256, device="cuda", dtype=torch.bfloat16)}
    with torch.inference_mode():
        for i in range(4):  # the first call captures, the others copy new values in and replay
            x = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
            got = g(x, 0.5, extra=bias)
            want = m(x, 0.5, extra=bias)
            # qengine's kernels are deterministic: the replay is bit-exact. cuBLAS (the bf16
            # model) may pick another algorithm under capture: within bf16 rounding there.
            tol = dict(rtol=0, atol=0) if scheme else dict(rtol=2e-2, atol=2e-2)
            torch.testing.assert_close(got[0], want[0], **tol, msg=f"call {i}")
            torch.testing.assert_close(got[1], want[1], **tol, msg=f"call {i}")
    assert g.num_graphs == 1


def test_one_graph_per_signature_and_outputs_not_overwritten():
    m = _model("w8a8-fp8")
    g = qengine.CUDAGraphModule(m)
    with torch.inference_mode():
        x1 = torch.randn(64, 256, device="cuda", dtype=torch.bfloat16)
        y1 = g(x1)[0]
        y1_copy = y1.clone()
        g(torch.randn(64, 256, device="cuda", dtype=torch.bfloat16))  # same signature: replays
        assert torch.equal(y1, y1_copy)  # cloned output survives the next replay
        assert g.num_graphs == 1
        g(torch.randn(32, 256, device="cuda", dtype=torch.bfloat16))  # new shape
        g(x1, 2.0)  # new non-tensor value
        assert g.num_graphs == 3
        raw = qengine.CUDAGraphModule(m, clone_output=False)
        a, b = raw(x1)[0], raw(x1 * 2)[0]
        assert a.data_ptr() == b.data_ptr()  # the graph's own output tensor, overwritten in place
    assert g.tag == "block" and g.fc1 is m.fc1  # attributes pass through to the wrapped module


def test_cpu_tensor_argument_is_rejected():
    g = qengine.CUDAGraphModule(nn.Linear(4, 4).cuda())
    with pytest.raises(qengine.CUDAGraphError, match="CUDA device"):
        g(torch.randn(2, 4))


def test_host_sync_in_forward_is_a_clear_error():
    # In a subprocess: an invalidated capture must not leave this test process's CUDA state to
    # the GPU tests that run after it.
    code = (
        "import torch, qengine\n"
        "class Syncs(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * float(x.abs().max().item())\n"
        "g = qengine.CUDAGraphModule(Syncs())\n"
        "try:\n"
        "    g(torch.randn(8, device='cuda'))\n"
        "except qengine.CUDAGraphError as e:\n"
        "    print('CUDAGraphError:', e)\n"
        "    raise SystemExit(7)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 7, p.stdout + p.stderr
    assert "must not synchronise with the host" in p.stdout
