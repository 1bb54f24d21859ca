"""Procedural moving-shapes videos: a known, learnable distribution for convergence tests.

Each clip has a few coloured circles and squares moving at constant velocity and bouncing off the
frame edges, over a flat or textured (sum of low-frequency gratings) static background. Everything
is drawn from one seed, so a clip is reproducible bit for bit on any machine (CPU float32,
element-wise ops only). Edges are antialiased over one pixel, so the clips have no aliasing that a
tokenizer would have to learn.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from vistok.errors import VistokError


def _bounce(p0: torch.Tensor, v: torch.Tensor, t: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Position at times ``t`` of a point moving at ``v`` inside [lo, hi] with elastic reflections.

    Closed form (a triangle wave) rather than stepping, so frame i does not depend on how many
    frames are rendered.
    """
    span = (hi - lo).clamp_min(1e-6)
    u = torch.remainder(p0 - lo + v * t, 2 * span)
    return lo + span - (u - span).abs()


def _background(kind: str, g: torch.Generator, h: int, w: int) -> torch.Tensor:
    base = torch.rand(3, 1, 1, generator=g) * 1.6 - 0.8
    if kind == "flat":
        return base.expand(3, h, w).clone()
    if kind != "texture":
        raise VistokError(f"background must be 'texture' or 'flat'; got {kind!r}")
    y = torch.arange(h, dtype=torch.float32).view(h, 1)
    x = torch.arange(w, dtype=torch.float32).view(1, w)
    out = base.expand(3, h, w).clone()
    for _ in range(4):
        # Gratings of 1.5-6 cycles across the frame: visible structure, but smooth enough that the
        # moving shapes stay the dominant content.
        cycles = 1.5 + 4.5 * torch.rand(2, generator=g)
        angle = 2 * math.pi * torch.rand(1, generator=g)
        phase = 2 * math.pi * torch.rand(1, generator=g)
        amp = 0.08 + 0.12 * torch.rand(3, 1, 1, generator=g)
        along = cycles[0] * torch.cos(angle) * x / w + cycles[1] * torch.sin(angle) * y / h
        wave = torch.sin(2 * math.pi * along + phase)
        out = out + amp * wave
    return out.clamp(-1.0, 1.0)


def moving_shapes(
    *,
    frames: int = 17,
    height: int = 64,
    width: int = 64,
    num_shapes: int = 3,
    seed: int = 0,
    background: str = "texture",
    max_speed: float = 0.06,
) -> torch.Tensor:
    """One clip ``c t h w`` (c = 3) float32 in [-1, 1], determined by ``seed``.

    ``max_speed``: the largest speed per axis as a fraction of the frame's shorter side per frame
    (0.06 at 64 px is about 4 px per frame, within reach of a causal 3D CNN's receptive field).
    """
    if frames < 1 or height < 2 or width < 2 or num_shapes < 0:
        raise VistokError(
            f"expected frames >= 1, height, width >= 2, num_shapes >= 0; got {frames}, {height}, {width}, {num_shapes}"
        )
    g = torch.Generator().manual_seed(int(seed))
    video = _background(background, g, height, width).unsqueeze(1).repeat(1, frames, 1, 1)  # (c t h w)
    side = min(height, width)
    t = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1)
    y = torch.arange(height, dtype=torch.float32).view(1, height, 1) + 0.5  # pixel centres
    x = torch.arange(width, dtype=torch.float32).view(1, 1, width) + 0.5
    for _ in range(num_shapes):
        is_square = bool(torch.rand(1, generator=g) < 0.5)
        radius = side * (0.08 + 0.12 * torch.rand(1, generator=g))
        # Saturated colours away from the background's mid-range, so shapes stay visible on it.
        colour = torch.rand(3, generator=g) * 2 - 1
        colour = colour / colour.abs().max().clamp_min(1e-6) * 0.9
        lo = radius
        hi_y, hi_x = height - radius, width - radius
        cy = lo + torch.rand(1, generator=g) * (hi_y - lo).clamp_min(0)
        cx = lo + torch.rand(1, generator=g) * (hi_x - lo).clamp_min(0)
        vy, vx = (torch.rand(2, generator=g) * 2 - 1) * max_speed * side
        py = _bounce(cy, vy, t, lo, hi_y)  # (t 1 1)
        px = _bounce(cx, vx, t, lo, hi_x)
        dy, dx = (y - py).abs(), (x - px).abs()  # (t h w) by broadcasting
        dist = torch.maximum(dy, dx) - radius if is_square else torch.sqrt(dy * dy + dx * dx) - radius
        alpha = (0.5 - dist).clamp(0.0, 1.0)  # one-pixel antialiased edge
        video = video * (1 - alpha) + colour.view(3, 1, 1, 1) * alpha
    return video.clamp(-1.0, 1.0).contiguous()


def _item_seed(seed: int, index: int) -> int:
    # Distinct, well-spread seeds per item (a plain seed + index would make dataset(seed=0)[1]
    # equal dataset(seed=1)[0]).
    return (int(seed) * 1_000_003 + int(index) * 7_919 + 12_345) % (2**63 - 1)


def moving_shapes_batch(batch: int, *, seed: int = 0, **kwargs) -> torch.Tensor:
    """``b c t h w``: ``batch`` independent clips; keyword arguments as ``moving_shapes``."""
    return torch.stack([moving_shapes(seed=_item_seed(seed, i), **kwargs) for i in range(batch)])


class MovingShapesDataset(Dataset):
    """``length`` moving-shapes clips with the same item format as ``ClipDataset``.

    Item ``i`` is always the same clip for a given ``seed``, whatever the worker or epoch.
    """

    def __init__(self, length: int, *, frames: int = 17, size: int = 64, seed: int = 0, **kwargs):
        if length < 1:
            raise VistokError(f"length must be >= 1; got {length}")
        self.length, self.frames, self.size, self.seed, self.kwargs = length, frames, size, seed, kwargs

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(index)
        video = moving_shapes(
            frames=self.frames, height=self.size, width=self.size, seed=_item_seed(self.seed, index), **self.kwargs
        )
        return {"video": video, "path": f"synthetic:{index}", "kind": "video" if self.frames > 1 else "image"}
