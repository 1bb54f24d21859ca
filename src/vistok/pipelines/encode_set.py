"""Tokenize a labelled data set in batches: the work behind ``vistok encode-set``.

The result -- ``indices (n t' h' w')``, ``labels (n,)``, class names -- is what a class-conditional
token model trains on (:func:`vistok.generate.data.save_token_set` writes it to one ``.npz``).
Reconstruction quality on the same batches is measured on the way (PSNR, averaged over items), so
the user sees what the tokens can carry before training a generator on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vistok.data.labelled import LabelledSource, iter_labelled_batches
from vistok.errors import VistokError
from vistok.files import token_metadata
from vistok.metrics.quality import psnr
from vistok.tokenizers.base import Tokenizer


@dataclass
class TokenizedSet:
    indices: np.ndarray  # (n t' h' w') int64
    labels: np.ndarray  # (n,) int64
    class_names: list[str]
    meta: dict = field(default_factory=dict)
    psnr: float | None = None  # mean reconstruction PSNR over the items (dB), when measured


@torch.no_grad()
def tokenize_labelled(
    tok: Tokenizer,
    source: LabelledSource,
    *,
    batch_size: int = 64,
    measure: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> TokenizedSet:
    """Encode every item of ``source``; ``measure`` also decodes to report the mean PSNR."""
    if tok.vocab_size is None:
        raise VistokError(f"{type(tok).__name__} has a continuous bottleneck: it gives no tokens to train on")
    sc = tok.spatial_compression
    if source.size % sc:
        raise VistokError(f"size {source.size} is not a multiple of the tokenizer's spatial factor {sc}")
    tok.eval()
    dtype = next(tok.parameters()).dtype
    grids, labels, psnrs = [], [], []
    done = 0
    for video, lab in iter_labelled_batches(source, batch_size):
        video = video.to(dtype)
        idx = tok.encode(video)
        grids.append(idx.cpu().numpy())
        labels.append(lab.numpy())
        if measure:
            x_hat = tok.decode_indices(idx).float().clamp(-1, 1)
            psnrs.append(psnr(x_hat, video.float()).double().numpy())
        done += len(video)
        if progress is not None:
            progress(done, source.items)
    if not grids:
        raise VistokError(f"no item under {source.root} could be decoded ({len(source.skipped or [])} skipped)")
    indices = np.concatenate(grids).astype(np.int64)
    meta = token_metadata(tok, kind="image" if source.frames == 1 else "video", frames=source.frames,
                          height=source.size, width=source.size, source=str(source.root), class_names=source.class_names)
    mean_psnr = float(np.concatenate(psnrs).mean()) if psnrs else None
    return TokenizedSet(indices, np.concatenate(labels).astype(np.int64), source.class_names, meta, mean_psnr)
