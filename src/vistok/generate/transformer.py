"""Pre-norm transformer over flattened token grids, bidirectional or causal, with a KV cache.

Positions: one learned table per axis (``t``, ``h``, ``w``), summed -- factorized absolute
embeddings that serve any grid up to the configured maximum, images (``t' = 1``) and videos alike,
with ``T + H + W`` rows instead of ``T H W``. Tokens are flattened in raster order ``(t h w)``.

The KV cache is preallocated for the whole sequence: a decoding step writes its keys and values in
place and attends to the filled prefix, so a step costs one token's work plus attention over the
cache, never a re-concatenation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vistok.errors import VistokError


class GridPositions(nn.Module):
    """Learned per-axis position embeddings for grids up to ``max_grid = (T, H, W)``."""

    def __init__(self, max_grid: tuple[int, int, int], dim: int):
        super().__init__()
        self.max_grid = tuple(int(g) for g in max_grid)
        self.t = nn.Parameter(torch.randn(self.max_grid[0], dim) * 0.02)
        self.h = nn.Parameter(torch.randn(self.max_grid[1], dim) * 0.02)
        self.w = nn.Parameter(torch.randn(self.max_grid[2], dim) * 0.02)

    def check(self, grid: tuple[int, int, int]) -> None:
        if len(grid) != 3 or any(g < 1 or g > m for g, m in zip(grid, self.max_grid)):
            raise VistokError(f"token grid {tuple(grid)} must be between (1, 1, 1) and the model's maximum {self.max_grid}")

    def forward(self, grid: tuple[int, int, int]) -> Tensor:
        """``(t', h', w')`` -> ``(t' h' w', d)`` embeddings in raster order."""
        self.check(grid)
        t, h, w = grid
        pos = self.t[:t, None, None] + self.h[None, :h, None] + self.w[None, None, :w]
        return rearrange(pos, "t h w d -> (t h w) d")


class KVCache:
    """Keys and values of every layer for ``max_len`` positions, allocated once.

    ``k``, ``v``: ``(depth, b, heads, max_len, head_dim)``; ``length``: positions filled so far.
    """

    def __init__(self, *, depth: int, batch: int, heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (depth, batch, heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise VistokError(f"dim {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, *, causal: bool, cache: KVCache | None = None, layer: int = 0) -> Tensor:
        """``x (b n d)``; with ``cache``, ``x`` holds positions ``cache.length ...`` and attends to the
        cached prefix too (the caller advances ``cache.length`` after the last layer)."""
        n = x.shape[1]
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.heads)
        mask, is_causal = None, causal
        if cache is not None:
            start, end = cache.length, cache.length + n
            if end > cache.max_len:
                raise VistokError(f"KV cache of {cache.max_len} positions cannot take position {end - 1}")
            cache.k[layer, :, :, start:end] = k
            cache.v[layer, :, :, start:end] = v
            k, v = cache.k[layer, :, :, :end], cache.v[layer, :, :, :end]
            if start > 0:
                is_causal = False
                if causal and n > 1:  # new query i (absolute start + i) sees keys <= start + i
                    mask = torch.ones(n, end, dtype=torch.bool, device=x.device).tril(start)
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=is_causal and n > 1)
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, *, causal: bool, cache: KVCache | None, layer: int) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), causal=causal, cache=cache, layer=layer))
        return x + self.drop(self.mlp(self.norm2(x)))


class Transformer(nn.Module):
    """``depth`` blocks and a final LayerNorm over ``(b n d)`` sequences."""

    def __init__(self, *, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.dim, self.depth, self.heads = dim, depth, heads
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def new_cache(self, batch: int, max_len: int, *, dtype: torch.dtype, device: torch.device) -> KVCache:
        return KVCache(depth=self.depth, batch=batch, heads=self.heads, max_len=max_len,
                       head_dim=self.dim // self.heads, dtype=dtype, device=device)

    def forward(self, x: Tensor, *, causal: bool = False, cache: KVCache | None = None) -> Tensor:
        """``(b n d) -> (b n d)``. With ``cache``, ``x`` continues the cached sequence (causal use)."""
        for i, block in enumerate(self.blocks):
            x = block(x, causal=causal, cache=cache, layer=i)
        if cache is not None:
            cache.length += x.shape[1]
        return self.norm(x)
