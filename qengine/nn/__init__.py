"""Quantized modules that replace nn.Linear and nn.Conv2d."""
from .conv import QConv2d, check_conv_module
from .linear import QLinear, check_linear_shape, max_lowrank

__all__ = ["QConv2d", "QLinear", "check_conv_module", "check_linear_shape", "max_lowrank"]
