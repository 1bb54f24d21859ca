"""Camera-motion clips over real photographs: a labelled video set that installs anywhere.

No labelled action set installs from a package registry, so motion recognition stands in: each
clip is a virtual camera moving over a photograph -- panning left, right, up or down, zooming in
or out, rolling clockwise or counter-clockwise, or holding still. The class names say what the
camera does: when it pans left the picture slides right on screen; when it rolls clockwise the
picture turns counter-clockwise. Speeds, window sizes and positions are drawn at random per clip,
so a class is a motion, never a place in the photo; the photos are split by photo (a test clip's
photo is never seen in training) by :func:`split_of`.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
from PIL import Image

from vistok.errors import VistokError

MOTIONS = ("pan-left", "pan-right", "pan-up", "pan-down", "zoom-in", "zoom-out", "roll-cw", "roll-ccw", "static")


def split_of(name: str, test_share: float = 0.2) -> str:
    """``"test"`` for a stable ``test_share`` of names (by hash), else ``"train"``."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    return "test" if h < test_share else "train"


def motion_clip(photo: np.ndarray, motion: str, *, frames: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(frames, size, size, 3)`` uint8: a camera ``motion`` over ``photo`` ``(H W 3)`` uint8.

    The window is a square of 40-65 % of the photo's shorter side; a pan moves it by 15-35 % of
    its side over the clip, a zoom scales it by 0.65-0.8 (or the inverse), a roll turns it by
    12-30 degrees. The whole path stays inside the photo."""
    if motion not in MOTIONS:
        raise VistokError(f"unknown motion {motion!r}; choose from {MOTIONS}")
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise VistokError(f"expected an (H, W, 3) uint8 photo; got {photo.dtype} {photo.shape}")
    if frames < 2 or size < 8:
        raise VistokError(f"need at least 2 frames of at least 8 px; got {frames} of {size}")
    img = Image.fromarray(photo)
    if min(img.size) > 3 * size:  # an antialiased reduction first: the affine sampling below does not filter
        k = 2.5 * size / min(img.size)
        img = img.resize((max(1, round(img.size[0] * k)), max(1, round(img.size[1] * k))), Image.Resampling.LANCZOS)
    w, h = img.size
    side0 = rng.uniform(0.40, 0.65) * min(h, w)
    shift = rng.uniform(0.15, 0.35) * side0
    zoom = rng.uniform(0.65, 0.80)
    angle = math.radians(rng.uniform(12.0, 30.0))
    t = np.linspace(0.0, 1.0, frames)
    dx = dy = np.zeros(frames)
    scale = np.ones(frames)
    turn = np.zeros(frames)
    if motion == "pan-left":
        dx = -shift * t
    elif motion == "pan-right":
        dx = shift * t
    elif motion == "pan-up":
        dy = -shift * t
    elif motion == "pan-down":
        dy = shift * t
    elif motion == "zoom-in":
        scale = 1.0 + (zoom - 1.0) * t
    elif motion == "zoom-out":
        scale = zoom + (1.0 - zoom) * t
    elif motion == "roll-cw":
        turn = angle * t
    elif motion == "roll-ccw":
        turn = -angle * t
    # the largest extent the window reaches from its centre (a rotated square reaches side/sqrt(2))
    reach = side0 * scale.max() / (math.sqrt(2.0) if motion.startswith("roll") else 2.0)
    lo_x, hi_x = reach - min(dx.min(), 0), w - reach - max(dx.max(), 0)
    lo_y, hi_y = reach - min(dy.min(), 0), h - reach - max(dy.max(), 0)
    if hi_x < lo_x or hi_y < lo_y:
        raise VistokError(f"a {w}x{h} photo is too small for this motion")
    cx, cy = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    for i in range(frames):
        s = side0 * scale[i] / size  # photo pixels per output pixel
        c, n = math.cos(turn[i]), math.sin(turn[i])
        # output pixel (u, v) -> photo (x, y): rotate the window by turn (y down: a positive turn
        # rotates the window clockwise, so the picture appears to turn counter-clockwise)
        a, b = s * c, -s * n
        d, e = s * n, s * c
        half = size / 2.0
        ox = cx + dx[i] - (a * half + b * half)
        oy = cy + dy[i] - (d * half + e * half)
        frame = img.transform((size, size), Image.Transform.AFFINE, (a, b, ox, d, e, oy), resample=Image.Resampling.BICUBIC)
        out[i] = np.asarray(frame.convert("RGB"))
    return out
