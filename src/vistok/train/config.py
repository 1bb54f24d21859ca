"""Training configuration: typed dataclasses, named presets, YAML files, ``--set key=value``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vistok.configuration import Config, apply_overrides, from_dict, load_named, parse_override, to_dict
from vistok.errors import VistokError
from vistok.losses.adversarial import DiscriminatorConfig
from vistok.losses.objective import LossConfig
from vistok.tokenizers.registry import TOKENIZERS
from vistok.train.loop import OptimConfig, ScaleConfig, check_loop_settings


@dataclass
class DataConfig(Config):
    """Where clips come from and how they are cut.

    ``path``: a folder of videos and/or images, one media file, or a folder of ``.tar`` shards;
    ``None`` uses the sample media that ships with the install (the held-out clip excluded).
    ``image_fraction``: share of steps whose batch is images (1-frame clips) when images are
    available, for joint image + video training of one vocabulary (MAGVIT-v2, section 3.2).
    """

    path: str | None = None
    frames: int = 17
    size: int = 64
    frame_stride: int = 1
    batch_size: int = 2
    image_batch_size: int = 8
    image_fraction: float = 0.0
    # the shorter side is resized to ``scale`` pixels before the random crop (None: just enough to
    # cover ``size``); set it to the resolution the model will meet, so crops keep that scale
    scale: int | None = None
    grayscale: float = 0.0  # share of training clips made grey (BT.601 luma in R, G and B)
    random_crop: bool = True
    num_workers: int = 0
    cache: bool = True

    def __post_init__(self):
        if self.batch_size < 1 or self.image_batch_size < 1 or self.frames < 1 or self.size < 8:
            raise VistokError("data.batch_size, data.image_batch_size, data.frames >= 1 and data.size >= 8 required")
        if self.frame_stride < 1 or self.num_workers < 0:
            raise VistokError(f"data.frame_stride must be >= 1 and data.num_workers >= 0, got {self.frame_stride}, {self.num_workers}")
        if not 0.0 <= self.image_fraction <= 1.0:
            raise VistokError(f"data.image_fraction must be in [0, 1], got {self.image_fraction}")
        if self.scale is not None and self.scale < self.size:
            raise VistokError(f"data.scale must be >= data.size ({self.size}) or unset, got {self.scale}")
        if not 0.0 <= self.grayscale <= 1.0:
            raise VistokError(f"data.grayscale must be in [0, 1], got {self.grayscale}")


@dataclass
class TokenizerOptimConfig(OptimConfig):
    """The shared optimizer settings, plus the discriminator's (GAN training)."""

    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.0, 0.99)

    def __post_init__(self):
        super().__post_init__()
        if not self.disc_lr > 0 or len(self.disc_betas) != 2 or not all(0.0 <= b < 1.0 for b in self.disc_betas):
            raise VistokError(f"optim.disc_lr must be > 0 and optim.disc_betas in [0, 1), got {self.disc_lr}, {self.disc_betas}")


@dataclass
class StageConfig(Config):
    """One stage of progressive training (OmniTokenizer): ``steps`` steps whose data settings are
    the run's ``data`` with ``data`` here overriding them -- e.g. ``{image_fraction: 1.0}`` for the
    image-only stage, then ``{image_fraction: 0.5}`` for joint image + video training of the same
    weights. Optimizer, schedule and weights carry across the boundary."""

    name: str = ""
    steps: int = 1
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig(ScaleConfig):
    """A tokenizer training run. ``model_type`` names the tokenizer family, ``preset`` its size, and
    ``model`` overrides that preset's fields -- validated against the family's config class (typed,
    unknown keys refused) as soon as this config is built. ``discriminator``: a ``preset`` name
    (``tiny``, ``small``, ``magvit2``) and overrides of its fields, validated likewise."""

    model_type: str = "magvit2"
    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the model preset
    data: DataConfig = field(default_factory=DataConfig)
    optim: TokenizerOptimConfig = field(default_factory=TokenizerOptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    discriminator: dict[str, Any] = field(default_factory=dict)
    # LPIPS weights for loss.perceptual_weight > 0: an installed name (lpips-vgg, the default when
    # unset; lpips-alex) or a file written by LPIPS.save_pretrained
    perceptual_weights: str | None = None
    # Total optimizer steps. Unset: 1000, or with ``stages`` their sum. Set with stages (``--steps``):
    # the stages are rescaled to that total, keeping their proportions (see ``_fit_stages``).
    steps: int | None = None
    seed: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast
    ema_decay: float = 0.999
    log_every: int = 10
    image_every: int = 100
    checkpoint_every: int = 100
    device: str | None = None
    # Progressive training: when set, the run is these stages in order and ``steps`` is their sum.
    stages: list[StageConfig] = field(default_factory=list)
    # Warm start: a saved tokenizer (or run directory) whose weights initialize this model; layers
    # that differ only because the bottleneck differs (e.g. VQ -> KL fine-tuning) start fresh.
    init_from: str | None = None

    def __post_init__(self):
        if self.stages:
            for i, st in enumerate(self.stages):
                if st.steps < 1:
                    raise VistokError(f"stages[{i}].steps must be >= 1, got {st.steps}")
                stage_data(self, i)  # unknown or ill-typed data keys fail here, not mid-run
            if self.steps is not None and self.steps != sum(st.steps for st in self.stages):
                self.stages = _fit_stages(self.stages, self.steps)
            self.steps = sum(st.steps for st in self.stages)
        elif self.steps is None:
            self.steps = 1000
        check_loop_settings(self)
        if self.image_every < 1:
            raise VistokError(f"image_every must be >= 1, got {self.image_every}")
        self.tokenizer_config()  # unknown or ill-typed model.* keys fail here, not mid-run
        self.discriminator_config()

    def tokenizer_config(self):
        """The tokenizer's typed config: the ``preset`` of ``model_type`` with ``model`` laid over it."""
        cls = TOKENIZERS.get(self.model_type, where="model_type")
        return cls.config_class.preset(self.preset, self.model, prefix="model.")

    def discriminator_config(self) -> DiscriminatorConfig:
        d = dict(self.discriminator)
        return DiscriminatorConfig.preset(d.pop("preset", "small"), d, prefix="discriminator.")


def _fit_stages(stages: list[StageConfig], total: int) -> list[StageConfig]:
    """``stages`` rescaled to ``total`` steps in the same proportions (boundaries rounded, every
    stage at least one step), so ``vistok train omni-tiny --steps 40`` trains 20 image-only steps
    then 20 joint ones instead of silently training the preset's 300."""
    if total < len(stages):
        raise VistokError(f"steps={total} cannot hold the {len(stages)} training stages (at least one step each)")
    lengths = [st.steps for st in stages]
    whole, ends, acc = sum(lengths), [], 0
    for i, n in enumerate(lengths):
        acc += n
        end = round(total * acc / whole)
        ends.append(min(max(end, (ends[-1] if ends else 0) + 1), total - (len(lengths) - 1 - i)))
    starts = [0] + ends[:-1]
    return [dataclasses.replace(st, steps=e - b) for st, b, e in zip(stages, starts, ends)]


def stage_data(cfg: "TrainConfig", index: int) -> DataConfig:
    """The ``DataConfig`` of stage ``index``: the run's data settings with the stage's overrides."""
    merged = {**to_dict(cfg.data), **cfg.stages[index].data}
    return from_dict(DataConfig, merged, prefix=f"stages[{index}].data.")


def stage_plan(cfg: "TrainConfig") -> list[tuple[int, int, "TrainConfig"]]:
    """``[(first step, end step, config of that stage)]``; one entry for a run without stages."""
    if not cfg.stages:
        return [(0, cfg.steps, cfg)]
    plan, start = [], 0
    for i, st in enumerate(cfg.stages):
        single = dataclasses.replace(cfg, data=stage_data(cfg, i), stages=[], steps=cfg.steps)
        plan.append((start, start + st.steps, single))
        start += st.steps
    return plan


# Training presets by name: a model preset plus the training settings that suit it.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # Minutes on 2 CPU cores: reconstruction + LFQ losses (no GAN, no LPIPS weights offline).
    "tiny": dict(
        preset="tiny",
        data=dict(frames=17, size=64, batch_size=2, image_batch_size=8, image_fraction=0.25),
        optim=dict(lr=1e-3, warmup_steps=20, weight_decay=0.0, min_lr_ratio=0.05),
        loss=dict(perceptual_weight=0.0, adversarial_weight=0.0),
        ema_decay=0.99,
        steps=300,
        log_every=5,
        image_every=50,
        checkpoint_every=50,
    ),
    # The paper's video tokenizer setting (GPU): 17 x 128 x 128, GAN and LPIPS after warm-up.
    # OmniTokenizer at the MAGVIT-v2 tiny budget, trained progressively as the paper: images only,
    # then joint images + clips with the same weights.
    "omni-tiny": dict(
        model_type="omni",
        preset="omni-tiny",
        data=dict(frames=17, size=64, batch_size=2, image_batch_size=8, image_fraction=0.25),
        optim=dict(lr=5e-4, warmup_steps=50, weight_decay=0.0, min_lr_ratio=0.05),
        loss=dict(perceptual_weight=0.0, adversarial_weight=0.0),
        stages=[dict(name="image", steps=150, data=dict(image_fraction=1.0)), dict(name="joint", steps=150)],
        ema_decay=0.99,
        log_every=5,
        image_every=50,
        checkpoint_every=50,
    ),
    "ucf-128": dict(
        preset="ucf-128",
        data=dict(frames=17, size=128, batch_size=8, image_fraction=0.0, num_workers=8),
        optim=dict(lr=1e-4, warmup_steps=5000),
        precision="bf16",
        steps=500_000,
        log_every=50,
        image_every=2000,
        checkpoint_every=5000,
    ),
    "imagenet-256": dict(
        preset="imagenet-256",
        data=dict(frames=1, size=256, batch_size=32, image_batch_size=32, image_fraction=1.0, num_workers=8),
        optim=dict(lr=1e-4, warmup_steps=5000),
        precision="bf16",
        steps=1_000_000,
        log_every=50,
        image_every=2000,
        checkpoint_every=5000,
    ),
}


def load_train_config(name_or_path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """A preset name (``tiny``) or a YAML file (which may name a ``base`` preset), then overrides.

    ``steps`` and ``stages`` both fix the run's length; the one set later wins (preset, then YAML,
    then each override in order): stages set after ``steps`` define the total, ``steps`` set with or
    after stages rescales them (``vistok train omni-tiny --steps 40``: 20 + 20 steps).
    """
    data, layers = load_named(name_or_path, TRAIN_PRESETS, "a training preset")
    data = apply_overrides(data, overrides or [])
    layers += [{parse_override(o)[0][0]} for o in overrides or []]
    last = {key: max((i for i, keys in enumerate(layers) if key in keys), default=-1) for key in ("steps", "stages")}
    if data.get("stages") and last["steps"] < last["stages"]:
        data.pop("steps", None)  # an earlier layer's length gives way to the stages set after it
    return from_dict(TrainConfig, data)
