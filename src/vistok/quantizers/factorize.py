"""Token factorization (MAGVIT-v2, section 3.1): a K-bit token as several narrower sub-tokens.

A language model over a 2^18 vocabulary embeds and predicts an 18-bit token as two 9-bit
sub-tokens, each with its own 512-row table and 512-way head. Sub-token 0 holds the least
significant bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from vistok.errors import VistokError


def _check_widths(widths: Sequence[int]) -> None:
    if not widths or any((not isinstance(w, int)) or w < 1 for w in widths):
        raise VistokError(f"sub-token widths must be positive integers, got {list(widths)!r}")
    if sum(widths) > 62:
        raise VistokError(f"sub-token widths sum to {sum(widths)} bits; at most 62 fit in int64")


def split_indices(indices: Tensor, widths: Sequence[int]) -> list[Tensor]:
    """Split ``(...)`` indices of ``sum(widths)`` bits into sub-tokens, least significant first."""
    _check_widths(widths)
    if indices.is_floating_point():
        raise VistokError(f"indices must be integers, got {indices.dtype}")
    idx = indices.long()
    total = sum(widths)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= 2**total):
        raise VistokError(f"indices must lie in [0, 2^{total}) for widths {list(widths)}")
    parts, shift = [], 0
    for w in widths:
        parts.append((idx >> shift) & ((1 << w) - 1))
        shift += w
    return parts


def join_indices(parts: Sequence[Tensor], widths: Sequence[int]) -> Tensor:
    """Inverse of :func:`split_indices`."""
    _check_widths(widths)
    if len(parts) != len(widths):
        raise VistokError(f"got {len(parts)} sub-token tensors for {len(widths)} widths")
    out = torch.zeros_like(parts[0], dtype=torch.long)
    shift = 0
    for p, w in zip(parts, widths):
        p = p.long()
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= 2**w):
            raise VistokError(f"a sub-token of width {w} must lie in [0, {2**w})")
        out |= p << shift
        shift += w
    return out
