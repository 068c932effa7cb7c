"""Quantized modules that replace nn.Linear and nn.Conv2d."""
from .conv import QConv2d, check_conv_module
from .fused import FusedGroupNorm, enable_fused_kernels
from .linear import QLinear, check_linear_shape, max_lowrank

__all__ = ["FusedGroupNorm", "QConv2d", "QLinear", "check_conv_module", "check_linear_shape", "enable_fused_kernels",
           "max_lowrank"]
