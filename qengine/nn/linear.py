"""QLinear: a drop-in for nn.Linear computing with quantized weights and activations.

``y = Q(x / s) . Q(W * s - L_up L_down)^T + (x / s) L_down^T L_up^T + b``

Buffers (all in the state dict; names are the checkpoint keys):
  weight       [N, K] int8 | float8_e4m3fn (8-bit schemes) or [N, K/2] uint8 (packed INT4; w4a8:
               in the prepacked layout of qengine.formats.w4a8_layout)
  weight_scale [N] float32, or [N, K/G] float32 for 4-bit weights ([N, 1]: per output channel)
  bias         [N] 16-bit (optional)
  smooth       [K] 16-bit, divides the input per channel (optional; from calibration)
  lora_down    [r, K] and lora_up [N, r] 16-bit: the low-rank branch (rank r > 0)
  input_scale  [1] float32 (optional; 8-bit schemes without a low-rank branch): one static activation
               scale from calibration (qengine.calib.static_scales) instead of a dynamic one per token

With ``input_scale`` the activation quantization is a few elementwise torch ops
(``ops.quantize_act_static``), which torch.compile fuses into whatever kernel produces the input (a
LayerNorm, the GEGLU product, a residual add), and the GEMM gets ones as token scales with the
static scale folded into its weight scales. Eager, those ops run one by one: static scales are
for compiled (and CUDA-graphed) runs.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import ops
from . import fused
from ..config import LayerQuantConfig
from ..formats import get_scheme
from ..formats.lowrank_cat import LOWRANK_CAT_MAX_RANK, lowrank_cat_weight
from .quantize_weight import lowrank_split, quantize_weight, weight_shapes


# csrc/w4a8/configs.cu (w4a8_choose_tile_config): up to this many tokens the W4A8 GEMM may take a
# split-K config, whose epilogue reads lowrank_act in fp32; above it every config reads it in the
# output dtype. (A mismatch costs a conversion launch, never correctness: the op takes both.)
W4A8_SPLITK_MAX_TOKENS = 32


class QLinear(nn.Module):
    #: How the cat path (enable_lowrank_cat) gets the branch's down-projection ``(x / s) @ L_down^T``:
    #: "fused" computes it in the quantize kernel (tensor cores, a second pass over X), "matmul"
    #: with a cuBLAS GEMM (fp32 out) followed by the one-pass quantize kernel. On an H100 "matmul"
    #: costs less GPU time per layer but one more launch, which made eager FLUX slower
    #: (notes/h100_2026-11-22d/README.md); it is meant for CUDA-graphed or compiled runs.
    lowrank_cat_down: str = "fused"
    #: Under ``torch.compile``: "op" keeps the activation quantization as qengine's CUDA kernel (an
    #: opaque op in the compiled graph); "inductor" traces it as the reference's torch ops instead,
    #: so inductor can fuse it with the ops producing the input (LayerNorm + modulate, GELU, ...),
    #: as torchao's dynamic quantization is. The GEMM stays qengine's either way. On an H100 the
    #: compiled FLUX step was no faster with "inductor" (105.2 vs 104.4 ms,
    #: notes/h100_2026-11-22e/README.md), hence not the default.
    compiled_quantize: str = "op"
    #: A LayerNorm applied to the input first (qengine.nn.fused_norm_quant.fold_layer_norms; set on
    #: the instance, not a submodule), and whether its fused CUDA kernel was built.
    _pre_norm: nn.LayerNorm | None = None
    _pre_norm_built: bool = False

    def __init__(self, in_features: int, out_features: int, layer_config: LayerQuantConfig, *, bias: bool = True,
                 smooth: bool = False, static_input_scale: bool = False, dtype: torch.dtype = torch.bfloat16,
                 device=None, backend: str = "auto"):
        super().__init__()
        self.scheme = get_scheme(layer_config.scheme)
        check_linear_shape(in_features, out_features, layer_config)
        if static_input_scale:
            check_static_scale_config(layer_config)
        if backend not in ops.BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {ops.BACKENDS}")
        self.in_features, self.out_features = in_features, out_features
        self.layer_config = layer_config
        self.backend = backend
        (w_shape, w_dtype), (s_shape, s_dtype) = weight_shapes(self.scheme, out_features, in_features,
                                                               layer_config.group_size)
        self.register_buffer("weight", torch.empty(w_shape, dtype=w_dtype, device=device))
        self.register_buffer("weight_scale", torch.empty(s_shape, dtype=s_dtype, device=device))
        r = layer_config.rank
        self.register_buffer("bias", torch.empty(out_features, dtype=dtype, device=device) if bias else None)
        self.register_buffer("smooth", torch.empty(in_features, dtype=dtype, device=device) if smooth else None)
        self.register_buffer("lora_down", torch.empty(r, in_features, dtype=dtype, device=device) if r else None)
        self.register_buffer("lora_up", torch.empty(out_features, r, dtype=dtype, device=device) if r else None)
        self.register_buffer("input_scale", torch.ones(1, dtype=torch.float32, device=device)
                             if static_input_scale else None)
        # weight_scale * input_scale: the GEMM's weight scales when the activations are static
        self.register_buffer("_w_scale_static", None, persistent=False)
        if static_input_scale:
            self._refresh_static_scales()
        # FP8 + low-rank with the branch folded into the GEMM's K (enable_lowrank_cat): the weight
        # with its extra columns; `weight` is then a view of its first K columns (no copy).
        self.register_buffer("_w_cat", None, persistent=False)
        self.register_buffer("_lowrank_inv_c", None, persistent=False)
        # lora_down / smooth, for the "matmul" down-projection of the cat path (see lowrank_cat_down)
        self.register_buffer("_lora_down_s", None, persistent=False)

    @classmethod
    def from_float(cls, linear: nn.Linear, layer_config: LayerQuantConfig, *, smooth: torch.Tensor | None = None,
                   lowrank: tuple[torch.Tensor, torch.Tensor] | None = None, clip: float = 1.0,
                   input_scale: torch.Tensor | float | None = None, backend: str = "auto") -> QLinear:
        """Quantize ``linear`` with round-to-nearest.

        ``smooth`` [K] divides activations (and multiplies weight columns); ``lowrank`` =
        ``(lora_down [r, K], lora_up [N, r])`` is the 16-bit branch; without it a rank-r
        truncated SVD of the (smoothed) weight is used when ``layer_config.rank > 0``. ``clip``
        < 1 clamps the residual's rows (or groups) to that fraction of their absmax before rounding.
        ``input_scale``: a static activation scale (see :meth:`set_input_scale`).
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"QLinear.from_float expects nn.Linear, got {type(linear).__name__}")
        w = linear.weight.detach()
        dtype = w.dtype if w.dtype.is_floating_point and w.element_size() <= 4 else torch.bfloat16
        q = cls(linear.in_features, linear.out_features, layer_config, bias=linear.bias is not None,
                smooth=smooth is not None, dtype=dtype, device=w.device, backend=backend)
        wf = w.float()
        if smooth is not None:
            q.smooth.copy_(smooth)
            wf = wf * q.smooth.float()[None, :]
        if layer_config.rank:
            down, up = lowrank if lowrank is not None else lowrank_split(wf, layer_config.rank)
            q.lora_down.copy_(down)
            q.lora_up.copy_(up)
            # The residual uses the factors as stored (16-bit), so branch + residual add up to W.
            wf = wf - q.lora_up.float() @ q.lora_down.float()
        qw, qs = quantize_weight(q.scheme, wf, layer_config.group_size, clip)
        q.weight.copy_(qw)
        q.weight_scale.copy_(qs)
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach())
        if input_scale is not None:
            q.set_input_scale(input_scale)
        return q

    # ------------------------------------------------------------ static activation scales

    def set_input_scale(self, scale: torch.Tensor | float | None) -> None:
        """Quantize activations with one static scale (``(x / smooth) / scale``, then round), or
        with ``None`` dynamically per token again. The state dict gains (or loses) ``input_scale``."""
        if scale is None:
            self.input_scale = self._w_scale_static = None
            return
        check_static_scale_config(self.layer_config)
        value = torch.as_tensor(scale, dtype=torch.float32).detach().reshape(-1)
        if value.numel() != 1 or not bool(torch.isfinite(value).all()) or float(value[0]) <= 0:
            raise ValueError(f"QLinear.set_input_scale: the scale must be one positive finite number, got {scale!r}")
        self.input_scale = value.to(self.weight_scale.device)
        self._refresh_static_scales()

    def _refresh_static_scales(self) -> None:
        with torch.no_grad():
            self._w_scale_static = self.weight_scale.float().reshape(-1) * self.input_scale
        if self.input_scale.device.type != "meta":
            ops.ones_scales(1, self.input_scale.device)  # the token scales exist before any compile

    def _forward_static(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        q = ops.quantize_act_static(x2, self.scheme, self.smooth, self.input_scale)
        return self._gemm_quantized(q, ops.ones_scales(x2.shape[0], x2.device), lead, x.dtype, self._w_scale_static)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"QLinear expects input with last dimension {self.in_features}, got shape {tuple(x.shape)}")
        norm = self._pre_norm
        if self.input_scale is not None:
            if norm is not None:  # the stock norm: under compile inductor fuses it with the quantization
                x = type(norm).forward(norm, x)
            return self._forward_static(x)
        if norm is not None:
            if x.dtype in fused._FUSED_DTYPES and fused._kernel_device(x, self._pre_norm_built):
                return self._forward_layer_norm(x, norm)
            x = type(norm).forward(norm, x)  # the norm's own computation, then the plain path
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        qbackend = self._quantize_backend()
        if self._w_cat is not None:  # the branch rides in the GEMM's K: no epilogue operands
            if self.lowrank_cat_down == "matmul":
                q, scale = ops.quantize_act_lowrank_cat_from(x2, self.smooth, self._lowrank_product(x2),
                                                             self._lowrank_inv_c, backend=qbackend)
            else:
                q, scale = ops.quantize_act_lowrank_cat(x2, self.smooth, self.lora_down, self._lowrank_inv_c,
                                                        backend=qbackend)
            w, lowrank_act, up = self._w_cat, None, None
        else:
            q, scale, lowrank_act = ops.quantize_act(x2, self.scheme, self.smooth, self.lora_down, backend=qbackend,
                                                     lowrank_dtype=self._lowrank_dtype(x2))
            w, up = self.weight, self.lora_up
            if up is None:
                lowrank_act = None
        y = ops.gemm(self.scheme, q, scale, w, self.weight_scale, self.bias, lowrank_act, up, out_dtype=x.dtype,
                     backend=self.backend)
        return y.reshape(*lead, self.out_features)

    def _lowrank_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """lowrank_act's dtype: the W4A8 CUDA GEMM's configs for more than 32 tokens take it rounded
        to their 16-bit output dtype, so the quantize kernel writes it that way, which saves the GEMM
        binding a conversion launch per call; float32 (None) everywhere else, including the split-K
        configs of <= 32 tokens, which read fp32 (notes/h100_2026-11-24d, call 8)."""
        if (self.lora_up is not None and self.scheme.name == "w4a8" and self.backend == "auto" and x.is_cuda
                and x.dtype in (torch.bfloat16, torch.float16) and x.shape[0] > W4A8_SPLITK_MAX_TOKENS):
            return x.dtype
        return None

    def _forward_layer_norm(self, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        """``self(norm(x))`` with the LayerNorm and the activation quantization in one kernel."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        q, scale = ops.layer_norm_quant(x2, self.scheme, norm.weight, norm.bias, norm.eps, self.smooth,
                                        backend=self._quantize_backend())
        return self._gemm_quantized(q, scale, lead, x.dtype)

    def _gemm_quantized(self, q: torch.Tensor, scale: torch.Tensor, lead, out_dtype: torch.dtype,
                        w_scale: torch.Tensor | None = None) -> torch.Tensor:
        """The GEMM of activations a producer-fused or static quantization already quantized (no
        low-rank branch), reshaped to ``[*lead, out_features]``; ``w_scale`` defaults to the layer's."""
        y = ops.gemm(self.scheme, q, scale, self.weight, self.weight_scale if w_scale is None else w_scale, self.bias,
                     None, None, out_dtype=out_dtype, backend=self.backend)
        return y.reshape(*lead, self.out_features)

    def _quantize_backend(self) -> str:
        """The backend of the activation quantization: the layer's, except under torch.compile with
        ``compiled_quantize = "inductor"`` (the reference's torch ops, for inductor to fuse)."""
        if self.compiled_quantize == "inductor" and torch.compiler.is_compiling():
            return "reference"
        return self.backend

    # ------------------------------------------------------------ gelu-cat input

    def supports_gelu_cat(self) -> bool:
        """Whether :meth:`forward_gelu_cat` runs fused here: an 8-bit-activation scheme with dynamic
        activation scales (static ones leave the fusing to torch.compile). A low-rank branch is
        fine: the quantize kernel computes its down-projection from the rows it reads in place."""
        return ops.supports_gelu_cat(self.scheme) and self.input_scale is None

    def supports_producer_quant(self) -> bool:
        """Whether the GEGLU and LayerNorm producer-fused quantizations run here: as
        :meth:`supports_gelu_cat`, without a low-rank branch (those kernels have no down-projection)."""
        return self.supports_gelu_cat() and self.lora_up is None and self._w_cat is None

    def forward_gelu_cat(self, x: torch.Tensor | None, gelu_x: torch.Tensor) -> torch.Tensor:
        """``self(torch.cat([x, gelu_tanh(gelu_x)], -1))`` (``x`` may be None: ``self(gelu(gelu_x))``)
        without forming the GELU output or the concatenation: the quantize kernel reads both inputs
        in place (``ops.quantize_act_gelu_cat``; with a low-rank branch the ``_lowrank`` variants:
        torch's GELU, then a quantize kernel that reads both parts in place and also computes the
        down-projection, so only the concatenation is saved). Same result as the unfused call, bit
        for bit.
        FLUX's single blocks (proj_out of [attention | GELU MLP]) and GELU feed-forwards use it."""
        kx = 0 if x is None else x.shape[-1]
        if kx + gelu_x.shape[-1] != self.in_features:
            raise ValueError(f"QLinear.forward_gelu_cat: x ({kx} columns) and gelu_x ({gelu_x.shape[-1]}) must add "
                             f"up to in_features={self.in_features}")
        if x is not None and (x.dtype != gelu_x.dtype or x.shape[:-1] != gelu_x.shape[:-1]):
            raise ValueError(f"QLinear.forward_gelu_cat: x {tuple(x.shape)} {x.dtype} and gelu_x "
                             f"{tuple(gelu_x.shape)} {gelu_x.dtype} must share leading dims and dtype")
        if not (self.supports_gelu_cat() and gelu_x.dtype in fused._FUSED_DTYPES
                and kx % 16 == 0 and gelu_x.shape[-1] % 16 == 0
                and not (self._w_cat is not None and self.lowrank_cat_down == "matmul")):
            g = torch.nn.functional.gelu(gelu_x, approximate="tanh")
            return self(g if x is None else torch.cat([x, g], dim=-1))
        lead = gelu_x.shape[:-1]
        g2 = gelu_x.reshape(-1, gelu_x.shape[-1]).contiguous()
        x2 = None if x is None else x.reshape(-1, kx).contiguous()
        qbackend = self._quantize_backend()
        if self._w_cat is not None:  # the branch rides in the FP8 GEMM's K
            q, scale = ops.quantize_act_gelu_cat_lowrank_cat(x2, g2, self.smooth, self.lora_down, self._lowrank_inv_c,
                                                             backend=qbackend)
            w, lowrank_act, up = self._w_cat, None, None
        elif self.lora_up is not None:
            q, scale, lowrank_act = ops.quantize_act_gelu_cat_lowrank(x2, g2, self.scheme, self.smooth, self.lora_down,
                                                                      backend=qbackend,
                                                                      lowrank_dtype=self._lowrank_dtype(g2))
            w, up = self.weight, self.lora_up
        else:
            q, scale = ops.quantize_act_gelu_cat(x2, g2, self.scheme, self.smooth, backend=qbackend)
            return self._gemm_quantized(q, scale, lead, gelu_x.dtype)
        y = ops.gemm(self.scheme, q, scale, w, self.weight_scale, self.bias, lowrank_act, up, out_dtype=gelu_x.dtype,
                     backend=self.backend)
        return y.reshape(*lead, self.out_features)

    def forward_geglu(self, proj: torch.Tensor) -> torch.Tensor:
        """``self(h * F.gelu(gate))`` with ``h, gate = proj.chunk(2, -1)`` (diffusers' ``GEGLU``
        after its projection) without forming the product: the quantize kernel reads both halves
        of ``proj`` in place (``ops.quantize_act_geglu``). Same result as the unfused call, bit for
        bit. SD/SDXL feed-forwards use it for their output layer."""
        if proj.shape[-1] != 2 * self.in_features:
            raise ValueError(f"QLinear.forward_geglu: proj must have 2 * in_features = {2 * self.in_features} columns, "
                             f"got shape {tuple(proj.shape)}")
        if not (self.supports_producer_quant() and proj.dtype in fused._FUSED_DTYPES):
            h, gate = proj.chunk(2, dim=-1)
            return self(h * torch.nn.functional.gelu(gate))
        lead = proj.shape[:-1]
        p2 = proj.reshape(-1, proj.shape[-1]).contiguous()
        q, scale = ops.quantize_act_geglu(p2, self.scheme, self.smooth, backend=self._quantize_backend())
        return self._gemm_quantized(q, scale, lead, proj.dtype)

    # ------------------------------------------------------------ low-rank branch in the GEMM's K

    @property
    def lowrank_cat(self) -> bool:
        """True when the low-rank branch runs as extra K columns of the FP8 GEMM (enable_lowrank_cat)."""
        return self._w_cat is not None

    def supports_lowrank_cat(self) -> bool:
        r = self.layer_config.rank
        return self.scheme.name == "w8a8-fp8" and self.lora_up is not None and r % 16 == 0 and r <= LOWRANK_CAT_MAX_RANK

    def enable_lowrank_cat(self) -> bool:
        """Fold the low-rank branch into the FP8 GEMM's K (:mod:`qengine.formats.lowrank_cat`): one
        GEMM with a few more K columns instead of a second pass over the output in the epilogue.

        The results differ from the epilogue path by rounding only (the branch carries ~bf16
        precision either way; the token scale may grow where the branch dominates). Costs 3r
        (rounded up to 128) bytes per output row. Returns False (and changes nothing) for layers it
        does not apply to: not FP8, no branch, rank not a multiple of 16 or above 256. Calling it
        again rebuilds the extra columns. The state dict is unchanged (``weight`` is a view)."""
        if not self.supports_lowrank_cat():
            return False
        weight = self.weight if self._w_cat is None else self._w_cat[:, :self.in_features]
        with torch.no_grad():
            w_cat, inv_c = lowrank_cat_weight(weight, self.weight_scale, self.lora_up)
            down_s = self.lora_down  # without smoothing the same tensor (no copy)
            if self.smooth is not None:
                down_s = (self.lora_down.float() / self.smooth.float()[None, :]).to(self.lora_down.dtype)
        self._w_cat, self._lowrank_inv_c, self._lora_down_s = w_cat, inv_c, down_s
        self.weight = w_cat[:, :self.in_features]
        return True

    def _lowrank_product(self, x2: torch.Tensor) -> torch.Tensor:
        """``(x / s) @ L_down^T`` as ``x @ (L_down / s)^T``, float32 ``[M, r]``."""
        if x2.is_cuda and x2.dtype == self._lora_down_s.dtype and x2.dtype != torch.float32:
            return torch.ops.aten.mm.dtype(x2, self._lora_down_s.t(), torch.float32)  # cuBLAS, fp32 out
        return x2.float() @ self._lora_down_s.float().t()

    def disable_lowrank_cat(self) -> None:
        """Back to the epilogue path; ``weight`` gets its own storage again."""
        if self._w_cat is None:
            return
        self.weight = self.weight.contiguous()
        self._w_cat = self._lowrank_inv_c = self._lora_down_s = None

    def _apply(self, fn, recurse=True):
        # .to() / .cuda() move the view and the whole tensor separately: point weight back into _w_cat.
        out = super()._apply(fn, recurse)
        if self._w_cat is not None:
            self.weight = self._w_cat[:, :self.in_features]
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # New weight / weight_scale / lora_up (copied into the view, or assigned): rebuild the columns.
        if self._w_cat is not None:
            if self.weight.data_ptr() != self._w_cat.data_ptr():  # assign=True: weight is the loaded tensor
                self._w_cat = self._lowrank_inv_c = self._lora_down_s = None
            self.enable_lowrank_cat()
        if self.input_scale is not None:
            self._refresh_static_scales()

    def extra_repr(self) -> str:
        c = self.layer_config
        return (f"in_features={self.in_features}, out_features={self.out_features}, scheme={c.scheme}, "
                f"group_size={c.group_size or 'per-channel'}, rank={c.rank}, smooth={self.smooth is not None}, "
                f"bias={self.bias is not None}, backend={self.backend}" + (", lowrank_cat=True" if self.lowrank_cat else "")
                + (", layer_norm_folded=True" if self._pre_norm is not None else "")
                + (", input_scale=static" if self.input_scale is not None else ""))


def check_linear_shape(in_features: int, out_features: int, layer_config: LayerQuantConfig) -> None:
    """Raise ValueError naming the problem if a layer of this shape cannot use ``layer_config``."""
    scheme = get_scheme(layer_config.scheme)
    mult = scheme.k_multiple(layer_config.group_size)
    if in_features % mult:
        raise ValueError(f"{scheme.name} needs in_features (K) to be a multiple of {mult}, got K={in_features}")
    if out_features % scheme.n_multiple:
        raise ValueError(f"{scheme.name} needs out_features (N) to be a multiple of {scheme.n_multiple}, "
                         f"got N={out_features}")
    if layer_config.rank > max_lowrank(in_features, out_features):
        raise ValueError(f"rank {layer_config.rank} is too large for a {in_features}->{out_features} layer "
                         f"(at most min(in, out) / 4 = {max_lowrank(in_features, out_features)})")


def check_static_scale_config(layer_config: LayerQuantConfig) -> None:
    """Raise ValueError unless ``layer_config`` can take a static activation scale."""
    scheme = get_scheme(layer_config.scheme)
    if not ops.supports_static(scheme):
        raise ValueError(f"static activation scales need an 8-bit scheme (w8a8-int8, w8a8-fp8), not {scheme.name}")
    if layer_config.rank:
        raise ValueError(f"static activation scales do not support a low-rank branch (rank {layer_config.rank}): "
                         "its down-projection comes from the dynamic quantize kernel")


def max_lowrank(in_features: int, out_features: int) -> int:
    """Largest low-rank branch worth having: beyond a quarter of the layer it costs as much as the layer."""
    return min(in_features, out_features) // 4
