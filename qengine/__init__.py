"""qengine: low-bit inference for diffusion models.

    import qengine
    cfg = qengine.QuantConfig.preset("w8a8-fp8")   # also "w8a8-int8", "w4a8", "w4a4"
    qengine.quantize(pipe_or_model, cfg)            # in place; returns its argument
    qengine.save(pipe_or_model, "ckpt_dir")
    qengine.load(float_model, "ckpt_dir")
"""
from . import ops  # registers torch.ops.qengine.*
from ._extension import backend_description, build_info, compiled_archs
from .api import is_quantized, model_bytes, plan, quantize, summary
from .checkpoint import CheckpointError, load, save
from .config import PRESETS, ConfigError, LayerQuantConfig, QuantConfig
from .cuda_graph import CUDAGraphError, CUDAGraphModule
from .integrations.temporal_cache import TemporalCache, TemporalCacheError, enable_temporal_cache
from .nn import FusedGroupNorm, QConv2d, QLinear, enable_fused_kernels
from .version import __version__

__all__ = [
    "PRESETS", "CUDAGraphError", "CUDAGraphModule", "CheckpointError", "ConfigError", "FusedGroupNorm",
    "LayerQuantConfig", "QConv2d", "QLinear", "QuantConfig", "TemporalCache", "TemporalCacheError", "__version__",
    "backend_description", "build_info", "compiled_archs", "enable_fused_kernels", "enable_temporal_cache",
    "is_quantized", "load", "model_bytes", "ops", "plan", "quantize", "save", "summary",
]
