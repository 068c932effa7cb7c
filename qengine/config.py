"""Versioned quantization configs that round-trip through JSON.

``QuantConfig`` says how a whole model is quantized; ``LayerQuantConfig`` is what one layer
gets after the per-module rules are applied. Per-module control, in order of precedence:

1. ``filter_fn(name, module) -> bool``: False keeps the layer 16-bit (not serialized: the
   resolved per-layer plan is what a checkpoint stores);
2. ``overrides``: fnmatch pattern over the module's fully-qualified name -> partial layer config
   (``{"scheme": "w8a8-int8"}``, ``{"rank": 0}``, or ``{"scheme": "none"}`` to keep it 16-bit);
   later patterns win; an override also re-enables a layer the architecture keeps 16-bit;
3. ``skip``: patterns kept 16-bit;
4. the architecture's default 16-bit list (``keep_defaults``; see integrations/diffusers.py).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .formats import get_scheme

CONFIG_VERSION = 1
CONV_SCHEMES = ("w8a8-int8", "w8a8-fp8")
MAX_RANK = 256

_PRESETS: dict[str, dict[str, Any]] = {
    "w8a8-fp8": dict(scheme="w8a8-fp8", conv_scheme="w8a8-fp8"),
    "w8a8-int8": dict(scheme="w8a8-int8", conv_scheme="w8a8-int8"),
    # 4-bit weights lose more; a rank-32 16-bit branch takes the largest singular directions.
    "w4a8": dict(scheme="w4a8", group_size=0, rank=32, conv_scheme="w8a8-int8"),
    "w4a4": dict(scheme="w4a4", group_size=64, rank=32, conv_scheme="w8a8-int8"),
}
PRESETS = tuple(_PRESETS)


class ConfigError(ValueError):
    """An invalid or unknown quantization config."""


def _check_rank(rank: int, where: str) -> None:
    if not isinstance(rank, int) or rank < 0 or rank > MAX_RANK or rank % 16:
        raise ConfigError(f"{where}: rank must be 0 or a multiple of 16 up to {MAX_RANK}, got {rank!r}")


@dataclass(frozen=True)
class LayerQuantConfig:
    """What one layer is quantized to. ``group_size`` is 0 for per-channel weights."""

    scheme: str
    group_size: int = 0
    rank: int = 0

    def __post_init__(self):
        try:
            get_scheme(self.scheme).check_group_size(self.group_size)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        _check_rank(self.rank, f"layer config {self.scheme}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class QuantConfig:
    scheme: str = "w8a8-fp8"
    group_size: int = 0
    rank: int = 0
    #: scheme for Conv2d layers, or "none" to keep convs 16-bit
    conv_scheme: str = "none"
    keep_defaults: bool = True
    skip: list[str] = field(default_factory=list)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Fuse each attention's q/k/v (self-attention) or k/v (cross-attention) projections into one
    #: layer before quantizing (qengine/integrations/fuse_projections.py): the input is quantized
    #: once and one wider GEMM runs. Layer names become ``to_qkv`` / ``to_kv`` (UNet) or
    #: ``to_qkv`` / ``to_added_qkv`` (FLUX, SD3); configs written before this field existed read
    #: as False.
    fuse_qkv: bool = False
    filter_fn: Callable[[str, Any], bool] | None = field(default=None, compare=False, repr=False)
    version: int = CONFIG_VERSION

    def __post_init__(self):
        if self.version != CONFIG_VERSION:
            raise ConfigError(f"config version {self.version} is not supported (this qengine reads {CONFIG_VERSION})")
        if self.scheme not in _PRESETS:
            raise ConfigError(f"unknown scheme {self.scheme!r}; known schemes: {', '.join(_PRESETS)}")
        if not isinstance(self.fuse_qkv, bool):
            raise ConfigError(f"fuse_qkv must be true or false, got {self.fuse_qkv!r}")
        if self.conv_scheme not in (*CONV_SCHEMES, "none"):
            raise ConfigError(f"conv_scheme must be one of {CONV_SCHEMES} or 'none', got {self.conv_scheme!r}")
        self.linear_config()  # validates scheme/group_size/rank together
        for pattern, ov in self.overrides.items():
            unknown = set(ov) - {"scheme", "group_size", "rank"}
            if unknown:
                raise ConfigError(f"override {pattern!r} has unknown keys {sorted(unknown)}")
            if ov.get("scheme") not in (None, "none"):
                self._apply(LayerQuantConfig(self.scheme, self.group_size, self.rank), ov, pattern)

    @classmethod
    def preset(cls, name: str, **changes: Any) -> QuantConfig:
        """One of :data:`PRESETS` ("w8a8-fp8", "w8a8-int8", "w4a8", "w4a4"), with optional field changes."""
        if name not in _PRESETS:
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
        return cls(**{**_PRESETS[name], **changes})

    # ------------------------------------------------------------ per-layer resolution

    def linear_config(self) -> LayerQuantConfig:
        return LayerQuantConfig(self.scheme, self.group_size, self.rank)

    @staticmethod
    def _apply(base: LayerQuantConfig, ov: dict[str, Any], pattern: str) -> LayerQuantConfig:
        scheme = ov.get("scheme", base.scheme)
        group = ov.get("group_size", base.group_size if scheme == base.scheme else get_scheme(scheme).default_group_size())
        try:
            return LayerQuantConfig(scheme, group, ov.get("rank", base.rank))
        except ConfigError as e:
            raise ConfigError(f"override {pattern!r}: {e}") from None

    def resolve(self, name: str, module: Any, is_conv: bool,
                default_keep: tuple[str, ...] = ()) -> tuple[LayerQuantConfig | None, str]:
        """The config for module ``name`` (None: stays 16-bit) and the reason, for the report."""
        if is_conv:
            if self.conv_scheme == "none":
                cfg, reason = None, "convs kept 16-bit (conv_scheme='none')"
            else:
                cfg, reason = LayerQuantConfig(self.conv_scheme), "conv_scheme"
        else:
            cfg, reason = self.linear_config(), "scheme"
        if self.keep_defaults and any(fnmatch.fnmatchcase(name, p) for p in default_keep):
            cfg, reason = None, "architecture default: kept 16-bit"
        if any(fnmatch.fnmatchcase(name, p) for p in self.skip):
            cfg, reason = None, "skip pattern"
        for pattern, ov in self.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                if ov.get("scheme") == "none":
                    cfg, reason = None, f"override {pattern!r}"
                else:
                    base = cfg or (LayerQuantConfig(self.conv_scheme) if is_conv and self.conv_scheme != "none"
                                   else self.linear_config())
                    cfg, reason = self._apply(base, ov, pattern), f"override {pattern!r}"
        if cfg is not None and self.filter_fn is not None and not self.filter_fn(name, module):
            cfg, reason = None, "filter_fn"
        return cfg, reason

    # ------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "filter_fn"}
        d["skip"] = list(self.skip)
        d["overrides"] = {k: dict(v) for k, v in self.overrides.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QuantConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"a quantization config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)} - {"filter_fn"}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config keys {sorted(unknown)}")
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> QuantConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
