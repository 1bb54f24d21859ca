"""Shared fixtures: a small folder of real-format media (H.264 clips and PNG images) made here."""

import numpy as np
import pytest

from vistok.data import moving_shapes, to_uint8, write_image, write_video

# A tokenizer small enough to train for a few steps in seconds on 2 cores; same code paths as presets.
TINY_MODEL = {"base_channels": 8, "channel_multipliers": [1, 2, 2, 2], "norm_groups": 4, "bits": 10}


def tiny_train_overrides(data_dir, **extra):
    """--set style overrides for a seconds-long training run on ``data_dir``."""
    sets = [
        f"data.path={data_dir}",
        "data.frames=9",
        "data.size=32",
        "data.batch_size=2",
        "data.image_batch_size=2",
        "data.image_fraction=0.34",
        f"model={TINY_MODEL}",
        "optim.warmup_steps=2",
        "ema_decay=0.9",
        "log_every=1",
        "image_every=3",
        "checkpoint_every=3",
    ]
    return sets + [f"{k}={v}" for k, v in extra.items()]


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    for i in range(2):
        clip = moving_shapes(frames=14, height=40, width=48, seed=i)
        write_video(d / f"clip{i}.mp4", to_uint8(clip), fps=10, crf=10)
    for i in range(2):
        img = to_uint8(moving_shapes(frames=1, height=36, width=36, seed=10 + i))[0]
        write_image(d / f"image{i}.png", img)
    return d


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny MAGVIT-v2 tokenizer (random weights) for command-line tests."""
    import torch

    from vistok.tokenizers import Magvit2Config, Magvit2Tokenizer

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("model")
    Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL)).save_pretrained(d)
    return d
