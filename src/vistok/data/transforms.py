"""Pixel transforms between decoded frames and the library's tensor layout.

Decoders give ``t h w 3`` uint8; models take ``c t h w`` float in [-1, 1]. The geometric transforms
(``resize_shorter``, ``center_crop``, ``random_crop``) act on ``c t h w`` tensors of any dtype and
are meant to run on uint8, before the float conversion: torch's antialiased uint8 resize is about ten
times faster than float and a 720p clip is a quarter of the memory.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from vistok.errors import VistokError


def to_tensor(frames) -> torch.Tensor:
    """``t h w 3`` uint8 (numpy or torch) -> ``c t h w`` float32 in [-1, 1]."""
    video = _uint8_cthw(frames)
    return video.float().div_(127.5).sub_(1.0)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """``c t h w`` float in [-1, 1] -> ``t h w c`` uint8 numpy (values outside [-1, 1] are clipped).

    The inverse of ``to_tensor`` up to rounding: ``to_uint8(to_tensor(x)) == x`` for uint8 ``x``.
    """
    _check(video)
    x = ((video.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round_().to(torch.uint8)
    return rearrange(x, "c t h w -> t h w c").cpu().numpy()


def _uint8_cthw(frames) -> torch.Tensor:
    """``t h w 3`` uint8 -> ``c t h w`` uint8 tensor (no copy of the pixels until needed)."""
    if isinstance(frames, np.ndarray):
        # torch wants writable memory; pillow's arrays are read-only views, so copy those only.
        frames = np.ascontiguousarray(frames) if frames.flags.writeable else np.array(frames, order="C")
        x = torch.from_numpy(frames)
    else:
        x = frames
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise VistokError(
            f"expected uint8 frames laid out (t h w 3); got {getattr(x, 'dtype', type(x).__name__)} "
            f"{tuple(getattr(x, 'shape', ()))}"
        )
    return rearrange(x, "t h w c -> c t h w")


def _check(video: torch.Tensor) -> None:
    if not isinstance(video, torch.Tensor) or video.ndim != 4:
        shape = tuple(getattr(video, "shape", ()))
        raise VistokError(f"expected a (c t h w) tensor; got {type(video).__name__} {shape}")


def resize_shorter(video: torch.Tensor, size: int, *, mode: str = "bicubic") -> torch.Tensor:
    """Resize ``c t h w`` so its shorter side is ``size``, keeping the aspect ratio.

    Antialiased (the filter widens when shrinking), so downscaled frames do not alias; this is what
    pillow's ``resize`` does and what the papers' data pipelines use. uint8 input stays uint8
    (rounded and saturated by torch); float output is clamped to [-1, 1] because bicubic overshoots.
    """
    _check(video)
    c, t, h, w = video.shape
    if size < 1:
        raise VistokError(f"size must be >= 1; got {size}")
    scale = size / min(h, w)
    out_hw = (size, max(size, round(w * scale))) if h <= w else (max(size, round(h * scale)), size)
    return resize(video, out_hw, mode=mode)


def resize_to_cover(video: torch.Tensor, height: int, width: int, *, mode: str = "bicubic") -> torch.Tensor:
    """Smallest aspect-preserving resize whose result is at least ``height x width`` (then crop).

    For a square target this is ``resize_shorter``; for a non-square one it picks the binding side.
    """
    _check(video)
    _, _, h, w = video.shape
    scale = max(height / h, width / w)
    out_hw = (max(height, round(h * scale)), max(width, round(w * scale)))
    return resize(video, out_hw, mode=mode)


def resize(video: torch.Tensor, hw: tuple[int, int], *, mode: str = "bicubic") -> torch.Tensor:
    """Antialiased resize of ``c t h w`` to exactly ``hw`` (frames are resized independently)."""
    _check(video)
    if tuple(video.shape[-2:]) == tuple(hw):
        return video
    if mode not in ("bilinear", "bicubic"):
        raise VistokError(f"mode must be 'bilinear' or 'bicubic'; got {mode!r}")
    frames = rearrange(video, "c t h w -> t c h w")  # time becomes the batch of 2D resizes
    out = F.interpolate(frames.contiguous(), size=tuple(hw), mode=mode, antialias=True, align_corners=False)
    if out.is_floating_point():
        out = out.clamp_(-1.0, 1.0)  # float pixels are in [-1, 1] by the library's convention
    return rearrange(out, "t c h w -> c t h w")


def center_crop(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The central ``height x width`` window of ``c t h w`` (the same window in every frame)."""
    _check(video)
    h, w = video.shape[-2:]
    _fits(h, w, height, width)
    top, left = (h - height) // 2, (w - width) // 2
    return video[..., top : top + height, left : left + width]


def random_crop(
    video: torch.Tensor, height: int, width: int, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A uniformly placed ``height x width`` window of ``c t h w``, the same in every frame (a moving
    window would add camera motion that is not in the clip)."""
    _check(video)
    h, w = video.shape[-2:]
    _fits(h, w, height, width)
    top = int(torch.randint(0, h - height + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - width + 1, (1,), generator=generator))
    return video[..., top : top + height, left : left + width]


def _fits(h: int, w: int, height: int, width: int) -> None:
    if height > h or width > w or height < 1 or width < 1:
        raise VistokError(f"cannot crop {height}x{width} from {h}x{w} frames; resize first")


def prepare_clip(
    frames,
    size: int | tuple[int, int],
    *,
    random: bool = False,
    generator: torch.Generator | None = None,
    scale: int | None = None,
    grayscale: float = 0.0,
) -> torch.Tensor:
    """Decoded ``t h w 3`` uint8 -> ``c t h w`` float in [-1, 1] at ``size`` (int: square).

    Resize to cover the target keeping the aspect ratio (``scale``: the shorter side to that many
    pixels first, so the crop keeps the content at the scale the model will meet), then crop
    (random or central), then, with ``random``, make the clip grey with probability ``grayscale``
    (:func:`finish_clip`); the geometric steps run on uint8 (see the module docstring).
    """
    height, width = (size, size) if isinstance(size, int) else size
    video = cover(_uint8_cthw(frames), height, width, scale)
    video = random_crop(video, height, width, generator=generator) if random else center_crop(video, height, width)
    return finish_clip(video, grayscale if random else 0.0, generator)


def cover(video: torch.Tensor, height: int, width: int, scale: int | None = None) -> torch.Tensor:
    """``video`` resized to be cropped to ``height x width``: with ``scale``, its shorter side to
    ``scale`` pixels (enlarged further only if that cannot hold the crop); without, the smallest
    aspect-preserving cover."""
    if scale is None:
        return resize_to_cover(video, height, width)
    if min(video.shape[-2:]) != scale:
        video = resize_shorter(video, scale)
    if video.shape[-2] < height or video.shape[-1] < width:
        video = resize_to_cover(video, height, width)
    return video


# ITU-R BT.601 luma, the weights of the Y' of every consumer video format's Y'CbCr
_LUMA = (0.299, 0.587, 0.114)


def to_grayscale(video: torch.Tensor) -> torch.Tensor:
    """``c t h w`` uint8 RGB -> the same shape with every channel the BT.601 luma (a grey clip)."""
    _check(video)
    y = sum(w * video[i].float() for i, w in enumerate(_LUMA))
    return y.round_().clamp_(0, 255).to(torch.uint8).expand_as(video).contiguous()


def finish_clip(video: torch.Tensor, grayscale: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """A cropped ``c t h w`` uint8 clip -> float in [-1, 1], grey with probability ``grayscale``
    (grey training clips teach the tokenizer that grey input has no chroma to invent). No random
    number is drawn when ``grayscale`` is 0, so runs without it draw exactly as before."""
    if grayscale > 0 and float(torch.rand((), generator=generator)) < grayscale:
        video = to_grayscale(video)
    return video.float().div_(127.5).sub_(1.0)
