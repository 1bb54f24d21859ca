"""Helpers for the generation tests: a tiny random tokenizer and small token sets."""

from pathlib import Path

import numpy as np

from vistok.generate.data import save_token_set
from vistok.tokenizers.magvit2 import Magvit2Config, Magvit2Tokenizer

# 2x down-sampling in space and time, 6-bit tokens: 8x8 images -> 1x4x4 tokens, 5 frames -> 3x4x4.
TINY_TOKENIZER = dict(base_channels=8, channel_multipliers=(1, 2), num_res_blocks=1, temporal_downsample=(True,),
                      norm_groups=4, bits=6)

# --set overrides for a seconds-long LM training run
TINY_LM = ["model={dim: 32, depth: 2, heads: 4, dropout: 0.1, class_dropout: 0.2}", "batch_size=4",
           "optim.warmup_steps=2", "log_every=1", "checkpoint_every=3", "sample_every=3", "samples_per_class=2",
           "sample_steps=4"]


def tiny_tokenizer(directory: Path, seed: int = 0) -> tuple[Magvit2Tokenizer, Path]:
    import torch

    torch.manual_seed(seed)
    tok = Magvit2Tokenizer(Magvit2Config.preset("tiny", **TINY_TOKENIZER)).eval()
    tok.save_pretrained(directory)
    return tok, Path(directory)


def token_set(path: Path, *, n: int = 12, grid=(1, 4, 4), vocab: int = 64, classes: int = 3,
              model_id: str = "synthetic", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, vocab, (n, *grid))
    labels = np.arange(n) % classes if classes else None
    meta = {"model_id": model_id, "vocab_size": vocab}
    if classes:
        meta["class_names"] = [f"class{i}" for i in range(classes)]
    return save_token_set(path, indices, labels, meta)
