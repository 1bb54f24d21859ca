"""Rotary position embeddings (Su et al., RoFormer): 1D for time, axial 2D for space.

Rotating queries and keys by angles proportional to their positions makes the attention score
depend on the *difference* of positions only, so a transformer trained at one resolution (or clip
length) runs at another without position tables to interpolate.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rotary_angles(positions: Tensor, dim: int, base: float = 10000.0) -> tuple[Tensor, Tensor]:
    """``positions (n,)`` -> ``(cos, sin)``, each ``(n, dim)`` (``dim`` even), pairs ``(i, i + dim/2)``
    rotated by ``position * base^(-2i/dim)``."""
    if dim % 2:
        raise ValueError(f"rotary dim must be even, got {dim}")
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    ang = positions.double()[:, None] * inv[None]  # (n, dim/2)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().float(), ang.sin().float()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x (..., n, dim)`` by ``cos, sin (n, dim)`` (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def axial_angles(height: int, width: int, dim: int, base: float = 100.0, device=None) -> tuple[Tensor, Tensor]:
    """``(cos, sin)`` of shape ``(height * width, dim)`` for a raster-ordered grid: the first half of
    the channels rotates with the row, the second with the column (``dim`` divisible by 4)."""
    if dim % 4:
        raise ValueError(f"axial rotary dim must be divisible by 4, got {dim}")
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    cr, sr = rotary_angles(rows, dim // 2, base)
    cc, sc = rotary_angles(cols, dim // 2, base)
    cos = torch.cat([cr[:, None].expand(height, width, -1), cc[None].expand(height, width, -1)], dim=-1)
    sin = torch.cat([sr[:, None].expand(height, width, -1), sc[None].expand(height, width, -1)], dim=-1)
    return cos.reshape(height * width, dim), sin.reshape(height * width, dim)


def apply_axial(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Apply axial angles to ``x (..., n, dim)``: each half of the channels is rotated on its own."""
    d = x.shape[-1] // 2
    return torch.cat([apply_rotary(x[..., :d], cos[:, :d], sin[:, :d]), apply_rotary(x[..., d:], cos[:, d:], sin[:, d:])], dim=-1)
