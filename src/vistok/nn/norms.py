"""Group normalization that is causal in time.

Group-norm statistics taken over all frames would let future frames change the past (the
normalization of frame 0 would depend on frame 16). Here statistics are per frame: over a channel
group and ``h w`` only, so frame ``i``'s output depends on frame ``i`` alone (MAGVIT-v2's causal
design, section 3.2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from vistok.nn.causal_conv import causal_repeat


def num_groups_for(channels: int, preferred: int) -> int:
    """The largest group count ``<= preferred`` that divides ``channels``."""
    g = max(1, min(preferred, channels))
    while channels % g:
        g -= 1
    return g


def frame_group_norm(x: Tensor, groups: int, eps: float, weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    """Normalize ``(b c t h w)`` per sample, per frame, per channel group (optional affine).

    Frames are folded into the batch so the fused native group-norm kernel does the work (faster
    on CPU than reductions over a strided view, see bench/tokenizer.py).
    """
    b = x.shape[0]
    y = F.group_norm(rearrange(x, "b c t h w -> (b t) c h w"), groups, weight, bias, eps)
    return rearrange(y, "(b t) c h w -> b c t h w", b=b)


class FrameGroupNorm(nn.Module):
    """GroupNorm with per-frame statistics and a learned per-channel affine."""

    def __init__(self, channels: int, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.groups = num_groups_for(channels, groups)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """``(b c t h w) -> (b c t h w)``."""
        return frame_group_norm(x, self.groups, self.eps, self.weight, self.bias)


class AdaptiveGroupNorm(nn.Module):
    """Per-frame GroupNorm whose scale and shift are predicted from the quantized latent.

    MAGVIT-v2 (section 3.2) conditions the decoder's normalization on the quantized codes. Here a
    1x1x1 convolution maps the codes to a per-position scale and shift at latent resolution, which
    are then brought to the feature's resolution by nearest repetition in space and causal
    repetition in time (output frame ``f`` reads latent frame ``ceil(f / r)``), so the decoder
    stays causal. The projection starts at zero: the layer begins as a plain GroupNorm and learns
    how much to listen to the codes.
    """

    def __init__(self, channels: int, cond_channels: int, groups: int = 32, eps: float = 1e-6):
        super().__init__()
        self.groups = num_groups_for(channels, groups)
        self.eps = eps
        self.proj = nn.Conv3d(cond_channels, 2 * channels, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor, cond: Tensor, *, time_factor: int, space_factor: int, first: bool) -> Tensor:
        """``x (b c t h w)``, ``cond (b k t' h' w')`` with ``t = 1 + time_factor (t' - 1)`` (or
        ``time_factor t'`` for a non-first streamed chunk) and ``h = space_factor h'``."""
        scale, shift = self.proj(cond).chunk(2, dim=1)  # (b c t' h' w')
        scale = causal_repeat(scale, time_factor, first=first) + 1  # (b c t h' w')
        shift = causal_repeat(shift, time_factor, first=first)
        # Fold the affine into the code modulation: (y w + b)(1 + s) + t = y a + m, with a and m
        # kept at latent spatial resolution and broadcast over each s x s block (no full-size
        # scale/shift tensors).
        a = self.weight.view(1, -1, 1, 1, 1) * scale
        m = torch.addcmul(shift, self.bias.view(1, -1, 1, 1, 1), scale)
        y = frame_group_norm(x, self.groups, self.eps)
        p = space_factor
        y = rearrange(y, "b c t (h p) (w q) -> b c t h p w q", p=p, q=p)
        y = torch.addcmul(m[:, :, :, :, None, :, None], y, a[:, :, :, :, None, :, None])
        return rearrange(y, "b c t h p w q -> b c t (h p) (w q)")
