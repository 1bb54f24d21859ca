"""Residual blocks of causal 3D convolutions (encoder: GroupNorm; decoder: adaptive GroupNorm)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vistok.nn.causal_conv import CausalConv3d
from vistok.nn.norms import AdaptiveGroupNorm, FrameGroupNorm


class ResBlock(nn.Module):
    """``x + conv(swish(norm(conv(swish(norm(x))))))`` with causal 3x3x3 convolutions."""

    def __init__(self, in_channels: int, out_channels: int, *, groups: int = 32):
        super().__init__()
        self.norm1 = FrameGroupNorm(in_channels, groups)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = FrameGroupNorm(out_channels, groups)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.skip = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(b c t h w) -> (b c' t h w)``."""
        inplace = not torch.is_grad_enabled()  # inference: reuse fresh buffers (same values, less memory)
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        return h.add_(self.skip(x)) if inplace else self.skip(x) + h


class AdaptiveResBlock(nn.Module):
    """Decoder residual block whose norms are conditioned on the quantized latent."""

    def __init__(self, in_channels: int, out_channels: int, cond_channels: int, *, groups: int = 32):
        super().__init__()
        self.norm1 = AdaptiveGroupNorm(in_channels, cond_channels, groups)
        self.conv1 = CausalConv3d(in_channels, out_channels, 3)
        self.norm2 = AdaptiveGroupNorm(out_channels, cond_channels, groups)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3)
        self.skip = CausalConv3d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor, cond: Tensor, *, time_factor: int, space_factor: int, first: bool) -> Tensor:
        """``x (b c t h w)``, ``cond (b k t' h' w')`` (see :class:`AdaptiveGroupNorm`)."""
        kw = dict(time_factor=time_factor, space_factor=space_factor, first=first)
        inplace = not torch.is_grad_enabled()  # as ResBlock
        h = self.conv1(F.silu(self.norm1(x, cond, **kw), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h, cond, **kw), inplace=inplace))
        return h.add_(self.skip(x)) if inplace else self.skip(x) + h
