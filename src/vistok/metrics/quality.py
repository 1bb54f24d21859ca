"""Full-reference quality metrics: PSNR, SSIM and MS-SSIM, for images and videos.

Inputs are pixels in [-1, 1] (``data_range = 2``), ``(b c h w)`` images or ``(b c t h w)``
videos. Videos are scored frame by frame and the frame scores are averaged (these are image
metrics; the frame average is the usual way video-tokenizer and codec comparisons report them).
Every function returns one value per sample, ``(b,)``, or a reduced scalar.

Numerics: computed in float32 (float64 when given float64); SSIM matches
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`` -- see ``ssim``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor

from vistok.errors import VistokError

__all__ = ["MS_SSIM_WEIGHTS", "chroma_scores", "frame_quality", "ms_ssim", "psnr", "ssim"]

# Wang, Simoncelli & Bovik 2003 ("Multi-scale structural similarity for image quality
# assessment"), the exponents fitted to human judgements, finest scale first.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)

_REDUCTIONS = ("none", "mean", "sum")


def _frames(x: Tensor, y: Tensor, name: str) -> tuple[Tensor, Tensor, int]:
    """Check a pair of inputs and fold video frames into the batch: ``-> (n c h w) x 2, t``."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise VistokError(f"{name}: expected two torch tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.shape != y.shape:
        raise VistokError(f"{name}: inputs must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (4, 5):
        raise VistokError(
            f"{name}: expected images (b c h w) or videos (b c t h w), got a tensor of shape {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise VistokError(f"{name}: empty input of shape {tuple(x.shape)}")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise VistokError(f"{name}: expected floating-point pixels in [-1, 1], got {x.dtype} and {y.dtype}")
    dtype = torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32
    x, y = x.to(dtype), y.to(dtype)
    if x.ndim == 4:
        return x, y, 1
    t = x.shape[2]
    return rearrange(x, "b c t h w -> (b t) c h w"), rearrange(y, "b c t h w -> (b t) c h w"), t


def _per_sample(values: Tensor, t: int, reduction: str) -> Tensor:
    """``(b t) -> (b,)`` by averaging frames, then the requested reduction."""
    values = reduce(values, "(b t) -> b", "mean", t=t)
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    return values.sum()


def _check_reduction(reduction: str, name: str) -> None:
    if reduction not in _REDUCTIONS:
        raise VistokError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_range(data_range: float, name: str) -> None:
    if not (isinstance(data_range, (int, float)) and data_range > 0 and math.isfinite(data_range)):
        raise VistokError(f"{name}: data_range must be a positive number (2.0 for pixels in [-1, 1]), got {data_range!r}")


def psnr(
    x: Tensor,
    y: Tensor,
    data_range: float = 2.0,
    *,
    reduction: str = "none",
    max_db: float | None = None,
) -> Tensor:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)``.

    Args:
        x, y: ``(b c h w)`` or ``(b c t h w)`` pixels; the MSE is taken over ``c h w`` of each frame
            and the per-frame PSNRs of a video are averaged.
        data_range: peak-to-peak range of the pixels, 2.0 for [-1, 1].
        reduction: ``"none"`` -> ``(b,)``, ``"mean"`` or ``"sum"`` -> scalar.
        max_db: optional cap. Without it, identical frames give ``+inf`` (the mathematical value,
            and what ``skimage.metrics.peak_signal_noise_ratio`` returns), which makes any average
            containing them ``+inf`` too; pass e.g. ``max_db=100`` to average over lossless frames.

    Returns:
        PSNR per sample ``(b,)`` (float32, or float64 for float64 inputs), or its reduction.
    """
    _check_reduction(reduction, "psnr")
    _check_range(data_range, "psnr")
    xf, yf, t = _frames(x, y, "psnr")
    # The squared error is accumulated in float64: at high PSNR (small errors on many pixels) a
    # float32 sum loses the digits that matter.
    mse = (xf.double() - yf.double()).square().mean(dim=(1, 2, 3))
    value = 10.0 * torch.log10(data_range**2 / mse)  # mse == 0 -> +inf, by design
    if max_db is not None:
        value = value.clamp(max=float(max_db))
    return _per_sample(value.to(xf.dtype), t, reduction)


def _gaussian_window(win_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalized 1-D Gaussian of ``win_size`` taps (Wang et al. 2004: 11 taps, sigma 1.5)."""
    coords = torch.arange(win_size, dtype=torch.float64) - (win_size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _filter(x: Tensor, window: Tensor) -> Tensor:
    """Separable Gaussian filter, 'valid' region only: ``(n c h w) -> (n c h-k+1 w-k+1)``.

    Keeping only the valid region is what skimage does too (it filters with reflected borders,
    then crops ``(k - 1) / 2`` pixels on every side before averaging), so the two agree exactly.
    """
    c, k = x.shape[1], window.numel()
    x = F.conv2d(x, window.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_and_cs(
    x: Tensor, y: Tensor, window: Tensor, data_range: float, k1: float, k2: float
) -> tuple[Tensor, Tensor]:
    """Mean SSIM and mean contrast-structure term of each image: ``(n c h w) -> (n,), (n,)``.

    SSIM = l * cs with l = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1) and
    cs = (2 s_xy + C2) / (s_x^2 + s_y^2 + C2), C_i = (K_i L)^2 (Wang et al. 2004, eq. 13). The
    local moments are population moments (no N / (N - 1)), as in the paper.
    """
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    c = x.shape[1]
    # One filtering pass over the five moment images, stacked along channels.
    moments = _filter(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.split(c, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    lum_map = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    # Channels are scored separately and averaged (skimage's channel_axis convention); with equal
    # sizes that is the mean over every channel and position.
    return (lum_map * cs_map).mean(dim=(1, 2, 3)), cs_map.mean(dim=(1, 2, 3))


def _check_ssim_args(win_size: int, sigma: float, k1: float, k2: float, name: str) -> None:
    if not isinstance(win_size, int) or win_size < 1 or win_size % 2 == 0:
        raise VistokError(f"{name}: win_size must be a positive odd integer, got {win_size!r}")
    if not sigma > 0:
        raise VistokError(f"{name}: sigma must be positive, got {sigma!r}")
    if not (k1 > 0 and k2 > 0):
        raise VistokError(f"{name}: k1 and k2 must be positive, got {k1!r}, {k2!r}")


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 2.0,
    *,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "none",
) -> Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004), Gaussian-weighted.

    Defaults are the paper's: an 11-tap Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03. The
    SSIM map is averaged over the positions where the window fits entirely inside the image, per
    channel, then over channels; this equals ``skimage.metrics.structural_similarity(x, y,
    channel_axis=..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=2.0)``.

    Args:
        x, y: ``(b c h w)`` or ``(b c t h w)``; each side at least ``win_size`` pixels. Videos are
            scored per frame and averaged.
        data_range: peak-to-peak range of the pixels, 2.0 for [-1, 1].
        reduction: ``"none"`` -> ``(b,)``, ``"mean"`` or ``"sum"`` -> scalar.

    Returns:
        SSIM in [-1, 1] per sample ``(b,)``, or its reduction. Differentiable.
    """
    _check_reduction(reduction, "ssim")
    _check_range(data_range, "ssim")
    _check_ssim_args(win_size, sigma, k1, k2, "ssim")
    xf, yf, t = _frames(x, y, "ssim")
    if min(xf.shape[-2:]) < win_size:
        raise VistokError(
            f"ssim: frames of {xf.shape[-2]}x{xf.shape[-1]} are smaller than the {win_size}-pixel window; "
            f"use frames of at least {win_size}x{win_size} or a smaller win_size"
        )
    window = _gaussian_window(win_size, sigma, xf.dtype, xf.device)
    value, _ = _ssim_and_cs(xf, yf, window, data_range, k1, k2)
    return _per_sample(value, t, reduction)


def ms_ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 2.0,
    *,
    weights: Sequence[float] = MS_SSIM_WEIGHTS,
    allow_fewer_scales: bool = True,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "none",
) -> Tensor:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003).

    ``MS-SSIM = prod_{j < M} cs_j^{w_j} * ssim_M^{w_M}``: the contrast-structure term at every
    scale, luminance only at the coarsest. Between scales the image is halved by 2x2 average
    pooling (odd sizes are floored). Negative ``cs`` / ``ssim`` values (anti-correlated images)
    are clamped to 0 before the fractional powers, as TensorFlow's ``tf.image.ssim_multiscale``
    does, so the result stays real and in [0, 1].

    Small images. The standard 5 scales need the coarsest scale (1/16 of the input) to hold the
    11-pixel window, i.e. inputs of at least 176 pixels on the short side. For smaller inputs,
    with ``allow_fewer_scales=True`` (default) the largest number of scales ``M`` that fits is
    used, with the first (finest) ``M`` weights renormalized to sum to one -- so a 64x64 image is
    scored on 3 scales with weights ``(0.0448, 0.2856, 0.3001) / 0.6305``. Scores computed on
    different numbers of scales are not comparable; report image sizes with them. With
    ``allow_fewer_scales=False`` such inputs raise ``VistokError``. Below ``win_size`` pixels
    (not even one scale) it always raises.

    Args:
        x, y: ``(b c h w)`` or ``(b c t h w)``; videos are scored per frame and averaged.
        data_range: peak-to-peak range of the pixels, 2.0 for [-1, 1].
        weights: per-scale exponents, finest first (default: the paper's five).
        reduction: ``"none"`` -> ``(b,)``, ``"mean"`` or ``"sum"`` -> scalar.

    Returns:
        MS-SSIM in [0, 1] per sample ``(b,)``, or its reduction. Differentiable, with finite
        gradients also where a term is clamped to 0 (usable as a training loss).
    """
    _check_reduction(reduction, "ms_ssim")
    _check_range(data_range, "ms_ssim")
    _check_ssim_args(win_size, sigma, k1, k2, "ms_ssim")
    weights = [float(w) for w in weights]
    if not weights or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise VistokError(f"ms_ssim: weights must be non-negative with a positive sum, got {weights}")
    xf, yf, t = _frames(x, y, "ms_ssim")

    # How many scales fit: the side after j halvings must still hold the window.
    side, fits = min(xf.shape[-2:]), 0
    while fits < len(weights) and side >= win_size:
        fits += 1
        side //= 2
    if fits == 0:
        raise VistokError(
            f"ms_ssim: frames of {xf.shape[-2]}x{xf.shape[-1]} are smaller than the {win_size}-pixel window"
        )
    if fits < len(weights):
        if not allow_fewer_scales:
            need = win_size * 2 ** (len(weights) - 1)
            raise VistokError(
                f"ms_ssim: {len(weights)} scales need frames of at least {need}x{need}, got "
                f"{xf.shape[-2]}x{xf.shape[-1]}; pass allow_fewer_scales=True or fewer weights"
            )
        total = sum(weights[:fits])
        weights = [w / total for w in weights[:fits]]

    window = _gaussian_window(win_size, sigma, xf.dtype, xf.device)
    w = torch.tensor(weights, dtype=xf.dtype, device=xf.device)
    terms = []
    for j in range(len(weights)):
        s, cs = _ssim_and_cs(xf, yf, window, data_range, k1, k2)
        terms.append(cs if j < len(weights) - 1 else s)
        if j < len(weights) - 1:
            xf, yf = F.avg_pool2d(xf, 2), F.avg_pool2d(yf, 2)
    stacked = torch.stack(terms, dim=-1).clamp(min=0.0)  # (n, M)
    # 0^w is 0, but its derivative is infinite (and NaN once multiplied by the clamp's zero
    # gradient): raise 1 to the power there instead and select 0, so gradients stay finite.
    positive = stacked > 0
    powered = torch.where(positive, torch.where(positive, stacked, torch.ones_like(stacked)) ** w, torch.zeros_like(stacked))
    value = torch.prod(powered, dim=-1)
    return _per_sample(value, t, reduction)


def frame_quality(x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """Per-frame scores of ``(t c h w)`` frames in [-1, 1], each metric only where it is defined:
    ``psnr`` always (dB, capped at 100), ``ssim`` when its 11-pixel window fits, ``ms_ssim`` when
    at least 3 scales fit (44 pixels; fewer-scale weights renormalized, see :func:`ms_ssim`).
    Returns ``{name: (t,) tensor}`` for the metrics computed."""
    out = {"psnr": psnr(x, y, max_db=100.0)}
    side = min(x.shape[-2:])
    if side >= 11:
        out["ssim"] = ssim(x, y)
    if side >= 11 * 2**2:
        out["ms_ssim"] = ms_ssim(x, y)
    return out


def uint8_frames(frames: np.ndarray) -> Tensor:
    """``(t h w 3)`` uint8 -> ``(t 3 h w)`` float32 in [-1, 1] (ample for 8-bit pixels: PSNR
    accumulates its squared error in float64 anyway)."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def frame_scores(
    original: np.ndarray, decoded: np.ndarray, lpips: Mapping[str, Callable[[Tensor, Tensor], Tensor]] | None = None,
    *, batch: int = 8, positions: bool = False,
) -> dict[str, float | None]:
    """Frame-averaged PSNR (dB, capped at 100), SSIM and MS-SSIM of ``(t h w 3)`` uint8 frames (each
    ``None`` where the frames are too small for it), and one LPIPS score per ``lpips`` entry
    (``name -> network``; ``None`` below the network's ``min_size``) -- what ``vistok rd`` and
    ``vistok eval`` report. ``positions`` adds ``psnr_first`` / ``psnr_later``: the first frame's
    PSNR and the mean over the later ones (``None`` for one frame). A causal video tokenizer codes
    the first frame alone and the later ones four to a latent frame, so the two can differ by design."""
    a, b = uint8_frames(original), uint8_frames(decoded)
    out: dict[str, float | None] = {"psnr": None, "ssim": None, "ms_ssim": None}
    per_frame = frame_quality(a, b)
    out.update({k: float(v.double().mean()) for k, v in per_frame.items()})
    if positions:
        p = per_frame["psnr"].double()
        out["psnr_first"] = float(p[0])
        out["psnr_later"] = float(p[1:].mean()) if len(p) > 1 else None
    for key, net in (lpips or {}).items():
        if min(a.shape[-2:]) < getattr(net, "min_size", 16):
            out[key] = None
            continue
        out[key] = float(torch.cat([net(a[i : i + batch], b[i : i + batch]) for i in range(0, len(a), batch)]).double().mean())
    return out


# BT.601 full-range chroma (JPEG / JFIF): Cb and Cr in 8-bit levels around 128
_CB = (-0.168736, -0.331264, 0.5)
_CR = (0.5, -0.418688, -0.081312)


def chroma_scores(original: np.ndarray, decoded: np.ndarray, *, grey_tolerance: int = 2) -> dict[str, float | bool]:
    """Colour that frame averages hide, for ``(t h w 3)`` uint8 clips:

    * ``chroma_error``: mean over pixels of ``(|dCb| + |dCr|) / 2`` in 8-bit levels (BT.601), the
      colour the reconstruction invents or loses;
    * ``grey_input``: every pixel of the original has R, G and B within ``grey_tolerance`` levels.
    """
    a = np.asarray(original, dtype=np.float64)
    b = np.asarray(decoded, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise VistokError(f"chroma_scores needs two (t h w 3) clips of one shape, got {a.shape} and {b.shape}")
    d = a - b
    return {
        "chroma_error": float((np.abs(d @ np.array(_CB)).mean() + np.abs(d @ np.array(_CR)).mean()) / 2),
        "grey_input": bool((np.ptp(original, axis=-1) <= grey_tolerance).all()),
    }
