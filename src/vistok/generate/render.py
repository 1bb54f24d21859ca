"""From sampled tokens to pictures: decode with the tokenizer, tile into a grid, write files.

Also the one check that a language model and a tokenizer belong together (the LM records the
model id of the tokenizer whose tokens it learned).
"""

from __future__ import annotations


import numpy as np
import torch

from vistok.data.transforms import to_uint8
from vistok.errors import VistokError
from vistok.generate.config import LMConfig
from vistok.tokenizers.base import Tokenizer


def check_tokenizer(config: LMConfig, tokenizer: Tokenizer, *, force: bool = False) -> None:
    """Refuse a tokenizer other than the one the LM's tokens came from (unless ``force``)."""
    if tokenizer.vocab_size != config.vocab_size:
        raise VistokError(
            f"the language model's vocabulary is {config.vocab_size} tokens but the tokenizer's is "
            f"{tokenizer.vocab_size}: they cannot work together"
        )
    recorded = config.tokenizer_id
    if recorded and not force and recorded != tokenizer.model_id():
        raise VistokError(
            f"the language model learned the tokens of tokenizer {recorded[:12]}…, but this tokenizer is "
            f"{tokenizer.model_id()[:12]}…; its pictures would be garbage (use --force to decode anyway)"
        )


@torch.no_grad()
def decode_to_uint8(tokenizer: Tokenizer, indices: torch.Tensor, *, batch_size: int = 16) -> np.ndarray:
    """``indices (b t' h' w')`` -> ``(b t h w 3)`` uint8 frames (grey tokenizers replicated to RGB)."""
    out = []
    for chunk in indices.split(batch_size):
        video = tokenizer.decode_indices(chunk.to(next(tokenizer.parameters()).device)).float()
        for v in video:
            frames = to_uint8(v)
            out.append(np.repeat(frames, 3, axis=-1) if frames.shape[-1] == 1 else frames)
    return np.stack(out)


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


