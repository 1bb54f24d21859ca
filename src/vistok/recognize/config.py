"""Typed configuration of a recognition model (:class:`RecognizerConfig`) and of its training run
(:class:`ClassifierTrainConfig`), with named presets.

A run is one of four experiments of the MAGVIT-v2 paper's "understanding" section, chosen by two
settings:

==============================  ============  ============
experiment                      ``inputs``    ``pretrain``
==============================  ============  ============
pixels, from scratch            ``pixels``    ``none``
tokens as inputs                ``tokens``    ``none``
token targets, then fine-tune   ``pixels``    ``tokens``
pixel targets, then fine-tune   ``pixels``    ``pixels``
==============================  ============  ============

The encoder is the same transformer in every row; only its input layer (a patch embedding of
``patch x patch`` pixels -- the first frame alone, then ``tubelet`` frames at a time -- or the
factorized sub-token embeddings of the tokenizer's tokens) differs, and with the tokenizer's
factors as ``patch`` and ``tubelet`` both read the same ``(t', h', w')`` grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from vistok.configuration import Config, apply_overrides, from_dict, load_named
from vistok.errors import VistokError
from vistok.generate.tokens import TokenFactorization, auto_num_subtokens
from vistok.train.loop import OptimConfig, ScaleConfig, check_loop_settings

INPUTS = ("pixels", "tokens")
PRETRAIN = ("none", "tokens", "pixels")


@dataclass
class RecognizerConfig(Config):
    """The classifier: a pre-norm transformer over a ``(t', h', w')`` grid, mean-pooled into a
    linear head.

    ``inputs``: ``pixels`` (patch embedding) or ``tokens`` (the tokenizer's tokens, embedded as the
    sum of ``num_subtokens`` sub-token embeddings, 0 = automatic as in the token LMs).
    ``pretrain``: the masked-modelling head the encoder carries (``tokens``: predict the tokenizer's
    token of each masked patch; ``pixels``: regress its normalized pixels), ``none`` for none.
    ``mask_ratio``: share of patches masked in pretraining. The data fields (``num_classes``,
    ``class_names``, ``max_grid``, ``vocab_size``, ``frames``, ``size``, ``tokenizer_id``) are
    filled in by the trainer from the data and the tokenizer.
    """

    inputs: Literal["pixels", "tokens"] = "pixels"
    pretrain: Literal["none", "tokens", "pixels"] = "none"
    dim: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    patch: int = 8
    tubelet: int = 4
    channels: int = 3
    mask_ratio: float = 0.5
    num_subtokens: int = 0
    vocab_size: int = 0
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    max_grid: tuple[int, int, int] | None = None
    frames: int = 1
    size: int = 0
    tokenizer_id: str | None = None

    family: ClassVar[str] = "recognizer"

    def __post_init__(self):
        if self.inputs not in INPUTS:
            raise VistokError(f"inputs must be one of {INPUTS}, got {self.inputs!r}")
        if self.pretrain not in PRETRAIN:
            raise VistokError(f"pretrain must be one of {PRETRAIN}, got {self.pretrain!r}")
        if self.inputs == "tokens" and self.pretrain != "none":
            raise VistokError("masked pretraining trains a pixel encoder: use inputs=pixels with pretrain="
                              f"{self.pretrain}, or pretrain=none with inputs=tokens")
        for name in ("dim", "depth", "heads", "patch", "tubelet", "channels", "frames"):
            if getattr(self, name) < 1:
                raise VistokError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise VistokError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.mlp_ratio <= 0:
            raise VistokError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        if not 0.0 <= self.dropout < 1.0:
            raise VistokError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.mask_ratio < 1.0:
            raise VistokError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.num_subtokens < 0 or self.vocab_size < 0 or self.num_classes < 0 or self.size < 0:
            raise VistokError("num_subtokens, vocab_size, num_classes and size must be >= 0")
        if (self.frames - 1) % self.tubelet:
            raise VistokError(f"frames must be 1 + a multiple of tubelet ({self.tubelet}); got {self.frames}")
        if self.class_names and len(self.class_names) != self.num_classes:
            raise VistokError(f"{len(self.class_names)} class names for num_classes={self.num_classes}")
        if self.max_grid is not None:
            if len(self.max_grid) != 3 or any(int(g) < 1 for g in self.max_grid):
                raise VistokError(f"max_grid must be three positive sizes (t', h', w'), got {self.max_grid}")
            self.max_grid = tuple(int(g) for g in self.max_grid)

    def grid_of(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """The ``(t', h', w')`` patch grid of clips of this geometry (the tokenizer's grid when
        ``patch`` and ``tubelet`` are its factors)."""
        if (frames - 1) % self.tubelet or height % self.patch or width % self.patch:
            raise VistokError(f"clips of {frames} x {height} x {width} do not tile into patches: frames must be 1 + "
                              f"{self.tubelet}k and sides multiples of {self.patch}")
        return (1 + (frames - 1) // self.tubelet, height // self.patch, width // self.patch)

    @property
    def needs_tokens(self) -> bool:
        """Whether the model reads or predicts a tokenizer's tokens."""
        return self.inputs == "tokens" or self.pretrain == "tokens"

    @property
    def subtokens(self) -> int:
        return self.num_subtokens or auto_num_subtokens(self.vocab_size)

    def factorization(self) -> TokenFactorization:
        if self.vocab_size < 2:
            raise VistokError("this recognizer has no token vocabulary (vocab_size is filled in from the tokenizer)")
        return TokenFactorization(self.vocab_size, self.subtokens)

    def check_complete(self) -> None:
        missing = [n for n, bad in (("num_classes", self.num_classes < 2), ("max_grid", self.max_grid is None),
                                    ("size", self.size < 1), ("vocab_size", self.needs_tokens and self.vocab_size < 2))
                   if bad]
        if missing:
            raise VistokError(f"RecognizerConfig needs {', '.join(missing)} (the trainer fills them in from the data)")

    @classmethod
    def presets(cls) -> dict[str, dict]:
        return RECOGNIZER_PRESETS


# Encoder sizes. rec-tiny learns a small set on 2 CPU cores in minutes (0.8 M parameters in the
# transformer); rec-base is ViT-B's shape (86 M), the encoder size of BEVT / the MAGVIT-v2 paper's
# understanding experiments.
RECOGNIZER_PRESETS: dict[str, dict[str, Any]] = {
    "rec-tiny": dict(dim=128, depth=4, heads=4, mlp_ratio=4.0, dropout=0.1),
    "rec-small": dict(dim=384, depth=12, heads=6, mlp_ratio=4.0, dropout=0.1),
    "rec-base": dict(dim=768, depth=12, heads=12, mlp_ratio=4.0, dropout=0.1),
}


@dataclass
class RecognitionOptimConfig(OptimConfig):
    """The shared optimizer settings with defaults for small transformers trained from scratch
    (DeiT / MAE fine-tuning use AdamW with weight decay 0.05)."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100


@dataclass
class ClassifierTrainConfig(ScaleConfig):
    """A recognition run: optional masked pretraining (``pretrain_steps`` on every training item,
    labels unused), then ``steps`` of supervised fine-tuning on ``label_fraction`` of the labels
    (chosen per class with the seed).

    ``data``: a class-folder tree or an IDX folder (its ``train`` split). ``size``: square side the
    items are brought to; ``frames``: clip length (1 for images). ``limit``: use only the first
    ``limit`` items (IDX folders) or ``limit`` per class (folder trees). ``tokenizer``: the
    tokenizer whose tokens the model reads or predicts. ``init_from``: start the encoder from
    another run's model (e.g. ``RUN/pretrained``, written at the end of a run's pretraining), so
    one pretraining serves several fine-tunings. ``cache_dir``: where the decoded pixels and tokens
    of a data set are kept between runs (default ``$VISTOK_HOME/cache/recognize``).
    """

    preset: str = "rec-tiny"
    model: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    tokenizer: str | None = None
    size: int = 32
    frames: int = 1
    limit: int | None = None
    label_fraction: float = 1.0
    batch_size: int = 128
    steps: int = 1500
    pretrain_steps: int = 1500
    seed: int = 0
    optim: RecognitionOptimConfig = field(default_factory=RecognitionOptimConfig)
    pretrain_optim: RecognitionOptimConfig = field(default_factory=RecognitionOptimConfig)
    init_from: str | None = None
    cache_dir: str | None = None
    ema_decay: float = 0.0
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = 20
    checkpoint_every: int = 500
    picture_every: int = 500
    device: str | None = None

    def __post_init__(self):
        if self.preset not in RECOGNIZER_PRESETS:
            raise VistokError(f"unknown recognizer preset {self.preset!r}; choose from {sorted(RECOGNIZER_PRESETS)}")
        check_loop_settings(self)
        for name in ("batch_size", "picture_every", "size", "frames"):
            if getattr(self, name) < 1:
                raise VistokError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.pretrain_steps < 0:
            raise VistokError(f"pretrain_steps must be >= 0, got {self.pretrain_steps}")
        if self.limit is not None and self.limit < 1:
            raise VistokError(f"limit must be >= 1 (or unset), got {self.limit}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise VistokError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        mc = self.model_config()
        if mc.needs_tokens and not self.tokenizer:
            raise VistokError(f"inputs={mc.inputs} pretrain={mc.pretrain} needs a tokenizer: pass --tokenizer MODEL")

    def model_config(self, **fill: Any) -> RecognizerConfig:
        """The preset with the ``model`` overrides and the data fields ``fill``."""
        return RecognizerConfig.preset(self.preset, self.model, prefix="model.", **fill)

    @property
    def pretraining(self) -> bool:
        return self.model_config().pretrain != "none" and self.pretrain_steps > 0


# Training settings by name (a YAML file may start from one with ``base: tiny``).
CLASSIFIER_PRESETS: dict[str, dict[str, Any]] = {
    # learns a small image set (Fashion-MNIST, digits) on 2 CPU cores in minutes
    "tiny": dict(preset="rec-tiny", size=32, frames=1, batch_size=128, steps=1500, pretrain_steps=1500),
    # short camera-motion clips: 9 frames -> 3 latent frames of the 4x-in-time tokenizers
    "tiny-video": dict(preset="rec-tiny", size=64, frames=9, batch_size=32, steps=1500, pretrain_steps=1500),
    # the paper's regime: ViT-B on 16-frame (17 with the causal first frame) clips at 128 px
    "base-video": dict(preset="rec-base", size=128, frames=17, batch_size=64, steps=30_000, pretrain_steps=100_000,
                       precision="bf16", optim=dict(lr=1e-4, warmup_steps=2000), pretrain_optim=dict(lr=1.5e-4, warmup_steps=5000),
                       log_every=100, checkpoint_every=2000, picture_every=2000),
}


def load_classifier_config(name_or_path: str | Path, overrides: list[str] | None = None) -> ClassifierTrainConfig:
    """A preset name (``tiny``) or a YAML file (which may name a ``base`` preset), then overrides."""
    data, _ = load_named(name_or_path, CLASSIFIER_PRESETS, "a classifier preset")
    return from_dict(ClassifierTrainConfig, apply_overrides(data, overrides or []))
