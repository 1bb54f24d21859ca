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
