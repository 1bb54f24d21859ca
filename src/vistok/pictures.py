"""Pictures people look at: one grid helper (:func:`tile`), reconstruction and comparison grids,
loss curves; PNGs written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vistok.atomic import atomic_output
from vistok.data.transforms import to_uint8


def reconstruction_grid(video: torch.Tensor, x_hat: torch.Tensor, *, max_items: int = 4, max_frames: int = 5) -> np.ndarray:
    """Inputs above reconstructions, as ``H W 3`` uint8 (see :func:`tile`).

    Clips: for each item a row of its input frames (picked evenly over the clip) above the same
    frames reconstructed. Images (``t = 1``): all items side by side, inputs above reconstructions.
    ``video``, ``x_hat``: ``(b c t h w)``.
    """
    n = min(video.shape[0], max_items)
    pairs = [frames for i in range(n) for frames in (_rgb(to_uint8(video[i])), _rgb(to_uint8(x_hat[i])))]
    if video.shape[2] == 1:  # inputs in the first row, reconstructions in the second
        pairs = pairs[0::2] + pairs[1::2]
    return tile(np.stack(pairs), columns=n, max_frames=max_frames)


def _rgb(frames: np.ndarray) -> np.ndarray:
    return np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames


def save_picture(path: str | Path, picture: np.ndarray, *, scale: int = 1) -> Path:
    """Write ``H W 3`` uint8 as a PNG (parent folders created), enlarged ``scale`` x without blur."""
    img = Image.fromarray(picture)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        img.save(tmp, format="PNG")
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


def tile(videos: np.ndarray, *, columns: int, max_frames: int = 5, pad: int = 2) -> np.ndarray:
    """``(b t h w 3)`` uint8 -> one ``H W 3`` picture on white.

    Images (``t = 1``): ``columns`` per row. Clips: one row per clip showing up to ``max_frames``
    frames spread evenly over it (``columns`` is ignored).
    """
    b, t, h, w, _ = videos.shape
    if t == 1:
        cols, rows = min(columns, b), -(-b // min(columns, b))
        cells = [[videos[r * cols + c, 0] if r * cols + c < b else None for c in range(cols)] for r in range(rows)]
    else:
        idx = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
        cols, rows = len(idx), b
        cells = [[videos[r, f] for f in idx] for r in range(b)]
    canvas = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, 3), 255, np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            if cell is not None:
                canvas[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = cell
    return canvas
