"""Perceptual (LPIPS) training loss for image and video reconstructions.

LPIPS is an image metric, so a clip is scored frame by frame: frames are folded into the batch
(MAGVIT's reference does the same, ``flatten_t_dim`` before its image perceptual loss). On long
clips the VGG trunk dominates the step's cost, so an optional random subset of frames is scored
instead -- an unbiased estimate of the all-frames mean.
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.metrics.perceptual import LPIPS
from vistok.metrics.store import WEIGHT_SPECS, require_weights

__all__ = ["PerceptualLoss", "build_perceptual"]


def build_perceptual(weights: str | Path | None = None) -> LPIPS:
    """The LPIPS network of the training objective: ``weights`` names installed weights
    (``lpips-vgg``, the default, or ``lpips-alex``: ``vistok weights install NAME``) or is a file
    written by ``LPIPS.save_pretrained``. Missing weights are one error naming the install command."""
    name = "lpips-vgg" if weights is None else str(weights)
    if name in WEIGHT_SPECS:
        if not name.startswith("lpips-"):
            raise VistokError(f"perceptual_weights: {name} is not an LPIPS network (lpips-vgg or lpips-alex)")
        return LPIPS.from_pretrained(require_weights(name))
    return LPIPS.from_pretrained(require_weights("lpips-vgg", path=name))


class PerceptualLoss(nn.Module):
    """Mean LPIPS distance between ``video`` and ``x_hat``, frames folded into the batch.

    Args:
        lpips: the distance network (``LPIPS.from_pretrained(path)``; ``LPIPS(width=8)`` for tests).
            Its parameters are frozen here; gradients flow to the pixels only.
        num_frames: if set, score this many frames drawn at random (the same frames for every clip
            of the batch) when a clip has more; ``None`` scores all frames.
    """

    def __init__(self, lpips: LPIPS, *, num_frames: int | None = None):
        super().__init__()
        if not isinstance(lpips, LPIPS):
            raise VistokError(f"PerceptualLoss: expected an LPIPS module, got {type(lpips).__name__}")
        if num_frames is not None and (not isinstance(num_frames, int) or num_frames < 1):
            raise VistokError(f"PerceptualLoss: num_frames must be None or a positive integer, got {num_frames!r}")
        self.lpips = lpips.eval().requires_grad_(False)
        self.num_frames = num_frames

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, trunk_path: str | Path | None = None, num_frames: int | None = None
    ) -> PerceptualLoss:
        """Build from LPIPS weight files (see ``LPIPS.from_pretrained`` for what is accepted)."""
        return cls(LPIPS.from_pretrained(path, trunk_path=trunk_path), num_frames=num_frames)

    def train(self, mode: bool = True) -> PerceptualLoss:
        # The network is a fixed measuring instrument: keep it in eval mode whatever the trainer
        # does with the surrounding modules.
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, video: Tensor, x_hat: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """``(b c t h w)`` or ``(b c h w)`` pair -> scalar mean LPIPS over clips and (chosen) frames.

        ``generator`` seeds the frame choice (default: the global RNG).
        """
        if not isinstance(video, Tensor) or not isinstance(x_hat, Tensor) or video.shape != x_hat.shape:
            raise VistokError(
                f"PerceptualLoss: video and x_hat must be tensors of the same shape, got "
                f"{getattr(video, 'shape', type(video))} and {getattr(x_hat, 'shape', type(x_hat))}"
            )
        if video.ndim == 4:
            return self.lpips.distance_frames(video, x_hat).mean()
        if video.ndim != 5:
            raise VistokError(f"PerceptualLoss: expected (b c t h w) or (b c h w) pixels, got shape {tuple(video.shape)}")
        t = video.shape[2]
        if self.num_frames is not None and self.num_frames < t:
            pick = torch.randperm(t, generator=generator)[: self.num_frames].sort().values.to(video.device)
            video, x_hat = video.index_select(2, pick), x_hat.index_select(2, pick)
        frames = rearrange(video, "b c t h w -> (b t) c h w")
        frames_hat = rearrange(x_hat, "b c t h w -> (b t) c h w")
        return self.lpips.distance_frames(frames, frames_hat).mean()
