"""Pictures of a training run: reconstruction grids and loss curves (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """``(c t h w)`` in [-1, 1] -> ``(t h w c)`` uint8."""
    x = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(1, 2, 3, 0).cpu().numpy()


def _row(frames: np.ndarray, pad: int) -> np.ndarray:
    """``(n h w 3)`` uint8 -> one ``(h, n (w + pad) - pad, 3)`` strip on white."""
    n, h, w, _ = frames.shape
    row = np.full((h, n * (w + pad) - pad, 3), 255, np.uint8)
    for j in range(n):
        row[:, j * (w + pad) : j * (w + pad) + w] = frames[j]
    return row


def reconstruction_grid(video: torch.Tensor, x_hat: torch.Tensor, *, max_items: int = 4, max_frames: int = 5) -> np.ndarray:
    """Inputs above reconstructions, as ``H W 3`` uint8.

    Clips: for each item a row of its input frames (picked evenly over the clip) above the same
    frames reconstructed. Images (``t = 1``): all items side by side, inputs above reconstructions.
    ``video``, ``x_hat``: ``(b c t h w)``.
    """
    b, c, t, h, w = video.shape
    pad = 2
    n = min(b, max_items)

    def rgb(x: np.ndarray) -> np.ndarray:
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x

    if t == 1:
        top = np.stack([rgb(to_uint8(video[i]))[0] for i in range(n)])
        bottom = np.stack([rgb(to_uint8(x_hat[i]))[0] for i in range(n)])
        gap = np.full((pad, top.shape[0] * (w + pad) - pad, 3), 255, np.uint8)
        return np.concatenate([_row(top, pad), gap, _row(bottom, pad)], axis=0)
    frames = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    rows = []
    for i in range(n):
        for src in (video[i], x_hat[i]):
            rows.append(_row(rgb(to_uint8(src[:, frames])), pad))
            rows.append(np.full((pad, rows[-1].shape[1], 3), 255, np.uint8))
        rows.append(np.full((pad * 3, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-2], axis=0)


def save_picture(path: str | Path, picture: np.ndarray, *, scale: int = 1) -> Path:
    """Write ``H W 3`` uint8 as a PNG (parent folders created), enlarged ``scale`` x without blur."""
    img = Image.fromarray(picture)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def save_reconstruction_grid(path: str | Path, video: torch.Tensor, x_hat: torch.Tensor, *, scale: int = 2, **kw) -> Path:
    return save_picture(path, reconstruction_grid(video, x_hat, **kw), scale=scale)


def save_loss_plot(path: str | Path, rows: list[dict], keys: list[str] | None = None) -> Path | None:
    """Plot metric curves from JSONL rows (log-scale y where all values are positive)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = keys or ["loss", "recon", "perceptual", "quantizer", "g_adv", "d_loss", "psnr"]
    series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(3.2 * len(series), 2.8), squeeze=False)
    for ax, (k, pts) in zip(axes[0], series.items()):
        steps, vals = zip(*pts)
        ax.plot(steps, vals, lw=1)
        if len(vals) > 8:  # a moving average makes the trend readable through the noise
            win = max(3, len(vals) // 20)
            smooth = np.convolve(vals, np.ones(win) / win, mode="valid")
            ax.plot(steps[win - 1 :], smooth, lw=2)
        if k != "psnr" and min(vals) > 0:
            ax.set_yscale("log")
        ax.set_title(k)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def comparison_grid(rows: list[tuple[str, np.ndarray]], *, frames: int = 5, scale: int = 1) -> Image.Image:
    """Labelled rows of frames, one row per ``(label, (t h w 3) uint8)`` source, the same frame
    indices (spread evenly over the clip) in every row."""
    from PIL import ImageDraw

    t = min(r[1].shape[0] for r in rows)
    idx = np.unique(np.linspace(0, t - 1, min(t, frames)).round().astype(int))
    h, w = rows[0][1].shape[1:3]
    label_w, pad = 120, 2
    width = label_w + len(idx) * (w + pad)
    canvas = Image.new("RGB", (width, len(rows) * (h + pad) + 16), "white")
    draw = ImageDraw.Draw(canvas)
    for j, f in enumerate(idx):
        draw.text((label_w + j * (w + pad) + 2, 2), f"frame {f}", fill="black")
    for i, (label, video) in enumerate(rows):
        y = 16 + i * (h + pad)
        draw.text((4, y + h // 2 - 6), label, fill="black")
        for j, f in enumerate(idx):
            canvas.paste(Image.fromarray(video[f]), (label_w + j * (w + pad), y))
    if scale > 1:
        canvas = canvas.resize((canvas.width * scale, canvas.height * scale), Image.NEAREST)
    return canvas
