"""CUDAGraphModule on a machine without CUDA: a clear error, not a crash later."""
import pytest
import torch
from torch import nn

import qengine


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error; the GPU behaviour is in tests/gpu")
def test_cuda_graph_module_without_cuda_names_the_problem():
    with pytest.raises(qengine.CUDAGraphError, match="needs a CUDA GPU"):
        qengine.CUDAGraphModule(nn.Linear(4, 4))
