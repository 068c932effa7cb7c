"""The prepacked INT4 weight layout of the w4a8 scheme (what the sm_90a kernel reads).

``w4a8_prepack`` permutes the 4-bit values of a ``pack_int4`` weight ``[N, K/2]`` (uint8)
inside blocks of 16 rows x 32 columns so that every thread of the Hopper mixed-input GEMM finds
the values of its INT8 wgmma register fragment next to each other (one 16-byte load per
fragment, an 8-value nibble->byte widening with shifts and byte permutes). The result has the
same shape and dtype; ``w4a8_unprepack`` is its exact inverse. The C++ side of this contract is
csrc/w4a8/sm90/weight_layout.cuh (CUTLASS's memory reordering atom for a 64x16x32 INT8 RS GMMA).

Value at (n, k) of the [N, K] INT4 matrix goes to flat element offset

    atom(n % 16, k % 32) + 512 * (n // 16) + 512 * (N // 16) * (k // 32)
    atom(r, c) = 64 * (r % 8) + 4 * (r // 8) + (c % 4) + 16 * ((c // 4) % 4) + 8 * (c // 16)

(blocks of 16x32 values, 512 per block, blocks down N first, then along K), and flat element
``2i`` / ``2i + 1`` sit in the low / high nibble of byte ``i`` (the ``pack_int4`` rule). Needs
N % 16 == 0 and K % 32 == 0.
"""
from __future__ import annotations

import torch

from .quantizers import pack_int4, unpack_int4

#: Rows / columns of one shuffle block.
BLOCK_N, BLOCK_K = 16, 32
#: Name of this layout, recorded in checkpoints (qengine/checkpoint.py).
LAYOUT_NAME = "sm90-int8-rs-shuffle-16x32"


def _offsets(n: int, k: int, device: torch.device) -> torch.Tensor:
    """Flat destination offset of every (n, k) value, int32, computed on ``device``.

    Not cached: for FLUX-size layers one offset table is up to 190 MB, and a per-shape cache on the
    GPU held ~1 GiB for the whole process (it was measured in the FLUX w4a8 denoising memory).
    Computed with device ops (no host-to-device copy), so the reference backend's per-call
    un-permute also works inside a CUDA-graph capture.
    """
    r = torch.arange(n, dtype=torch.int32, device=device)[:, None]
    c = torch.arange(k, dtype=torch.int32, device=device)[None, :]
    atom = 64 * (r % 8) + 4 * ((r // 8) % 2) + (c % 4) + 16 * ((c // 4) % 4) + 8 * ((c // 16) % 2)
    return (atom + 512 * (r // BLOCK_N) + 512 * (n // BLOCK_N) * (c // BLOCK_K)).reshape(-1)


def check_prepack_shape(n: int, k: int) -> None:
    if n % BLOCK_N or k % BLOCK_K or n <= 0 or k <= 0:
        raise ValueError(f"the w4a8 prepacked layout needs N % {BLOCK_N} == 0 and K % {BLOCK_K} == 0 "
                         f"(positive), got N={n} K={k}")
    if n * k >= 2 ** 31:
        raise ValueError(f"the w4a8 prepacked layout supports N * K < 2^31 values, got N={n} K={k}")


def _check(op: str, w: torch.Tensor) -> tuple[int, int]:
    if w.dtype != torch.uint8 or w.dim() != 2:
        raise ValueError(f"qengine::{op}: w must be a 2-D uint8 tensor of packed INT4 [N, K/2], "
                         f"got dtype {w.dtype} shape {tuple(w.shape)}")
    n, k = w.shape[0], w.shape[1] * 2
    check_prepack_shape(n, k)
    return n, k


def prepack(w: torch.Tensor) -> torch.Tensor:
    """``pack_int4`` layout ``[N, K/2]`` uint8 -> the kernel's layout (same shape and dtype)."""
    n, k = _check("w4a8_prepack", w)
    q = unpack_int4(w.contiguous()).reshape(-1)
    out = torch.empty_like(q)
    out[_offsets(n, k, w.device)] = q
    return pack_int4(out.reshape(n, k))


def unprepack(w: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`prepack`."""
    n, k = _check("w4a8_unprepack", w)
    flat = unpack_int4(w.contiguous()).reshape(-1)
    return pack_int4(flat[_offsets(n, k, w.device)].reshape(n, k))
