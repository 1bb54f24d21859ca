"""Down-sampling by strided causal convolution, up-sampling by depth-to-space (MAGVIT-v2, 3.2)."""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from vistok.nn.causal_conv import CausalConv3d


class Downsample(nn.Module):
    """Strided causal 3x3x3 convolution: ``(b c t h w) -> (b c' t' h/2 w/2)``.

    With ``temporal=True`` the time stride is 2 and ``1 + 2m`` frames become ``1 + m``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, temporal: bool):
        super().__init__()
        self.temporal = temporal
        self.conv = CausalConv3d(in_channels, out_channels, 3, stride=(2 if temporal else 1, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class DepthToSpaceUpsample(nn.Module):
    """Causal conv to ``c * r * 2 * 2`` channels, then rearranged into ``r``x time and 2x space.

    MAGVIT-v2 replaces transposed convolutions by depth-to-space. In time the first frame of a clip
    yields one frame, not ``r`` (its ``r - 1`` extra copies are dropped), so ``1 + k`` frames become
    ``1 + r k`` -- the mirror of the encoder's causal down-sampling.

    The convolution is initialized so that all ``r * 4`` sub-positions start identical (ICNR,
    Aitken et al. 2017), which avoids checkerboard artefacts at initialization.
    """

    def __init__(self, in_channels: int, out_channels: int, *, temporal: bool):
        super().__init__()
        self.time_factor = 2 if temporal else 1
        self.copies = self.time_factor * 4
        self.conv = CausalConv3d(in_channels, out_channels * self.copies, 3)
        with torch.no_grad():
            w = self.conv.conv.weight  # (c_out * copies, c_in, 3, 3, 3), channel index = c * copies + copy
            base = w.view(out_channels, self.copies, *w.shape[1:])[:, :1].clone()
            w.copy_(base.expand(-1, self.copies, -1, -1, -1, -1).reshape_as(w))
            b = self.conv.conv.bias.view(out_channels, self.copies)
            b.copy_(b[:, :1].expand(-1, self.copies))

    def forward(self, x: Tensor, *, first: bool = True) -> Tensor:
        """``(b c t h w) -> (b c' t'' 2h 2w)``, ``t'' = 1 + r (t - 1)`` if ``first`` else ``r t``."""
        y = rearrange(self.conv(x), "b (c r p q) t h w -> b c (t r) (h p) (w q)", r=self.time_factor, p=2, q=2)
        if first and self.time_factor > 1:
            y = y[:, :, self.time_factor - 1 :]
        return y
