"""Training configuration: typed dataclasses, named presets, YAML files, ``--set key=value``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vistok.configuration import apply_overrides, from_dict, load_yaml, parse_override, to_dict
from vistok.errors import VistokError
from vistok.losses.objective import LossConfig


@dataclass
class DataConfig:
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
    random_crop: bool = True
    num_workers: int = 0
    cache: bool = True


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    schedule: str = "cosine"  # or "constant"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    accumulate: int = 1
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.0, 0.99)


@dataclass
class StageConfig:
    """One stage of progressive training (OmniTokenizer): ``steps`` steps whose data settings are
    the run's ``data`` with ``data`` here overriding them -- e.g. ``{image_fraction: 1.0}`` for the
    image-only stage, then ``{image_fraction: 0.5}`` for joint image + video training of the same
    weights. Optimizer, schedule and weights carry across the boundary."""

    name: str = ""
    steps: int = 1
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    model_type: str = "magvit2"
    preset: str = "tiny"
    model: dict[str, Any] = field(default_factory=dict)  # overrides of the model preset
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    discriminator: dict[str, Any] = field(default_factory=dict)
    perceptual_weights: str | None = None  # LPIPS/VGG weights file; perceptual loss off if None
    # Total optimizer steps. Unset: 1000, or with ``stages`` their sum. Set with stages (``--steps``):
    # the stages are rescaled to that total, keeping their proportions (see ``_fit_stages``).
    steps: int | None = None
    seed: int = 0
    precision: str = "fp32"  # or "bf16" (autocast)
    ema_decay: float = 0.999
    log_every: int = 10
    image_every: int = 100
    checkpoint_every: int = 100
    distributed: str = "ddp"  # or "fsdp"
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
        if self.precision not in ("fp32", "bf16"):
            raise VistokError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.distributed not in ("ddp", "fsdp"):
            raise VistokError(f"distributed must be 'ddp' or 'fsdp', got {self.distributed!r}")
        if self.steps < 1:
            raise VistokError(f"steps must be >= 1, got {self.steps}")
        for name in ("log_every", "image_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise VistokError(f"{name} must be >= 1")
        if self.optim.accumulate < 1:
            raise VistokError("optim.accumulate must be >= 1")
        if self.optim.schedule not in ("cosine", "constant"):
            raise VistokError(f"optim.schedule must be 'cosine' or 'constant', got {self.optim.schedule!r}")
        d = self.data
        if d.batch_size < 1 or d.image_batch_size < 1 or d.frames < 1 or d.size < 8:
            raise VistokError("data.batch_size, data.image_batch_size, data.frames >= 1 and data.size >= 8 required")
        if not 0.0 <= d.image_fraction <= 1.0:
            raise VistokError(f"data.image_fraction must be in [0, 1], got {d.image_fraction}")


def _fit_stages(stages: list[StageConfig], total: int) -> list[StageConfig]:
    """``stages`` rescaled to ``total`` steps in the same proportions (boundaries rounded, every
    stage at least one step), so ``vistok train omni-tiny --steps 40`` trains 20 image-only steps
    then 20 joint ones instead of silently training the preset's 300."""
    import dataclasses

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
    import dataclasses

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
    text = str(name_or_path)
    layers: list[set[str]] = []  # top-level keys each layer sets, in order
    if text in TRAIN_PRESETS:
        data: dict[str, Any] = dict(TRAIN_PRESETS[text])
        layers.append(set(data))
    elif Path(text).suffix in (".yaml", ".yml") or Path(text).is_file():
        raw = load_yaml(text)
        base = raw.pop("base", None)
        if base is not None and base not in TRAIN_PRESETS:
            raise VistokError(f"{text}: unknown base preset {base!r}; choose from {sorted(TRAIN_PRESETS)}")
        layers += [set(TRAIN_PRESETS[base]) if base else set(), set(raw)]
        data = _merge(dict(TRAIN_PRESETS[base]) if base else {}, raw)
    else:
        raise VistokError(f"{text!r} is neither a training preset ({', '.join(sorted(TRAIN_PRESETS))}) nor a YAML file")
    data = apply_overrides(data, overrides or [])
    layers += [{parse_override(o)[0][0]} for o in overrides or []]
    last = {key: max((i for i, keys in enumerate(layers) if key in keys), default=-1) for key in ("steps", "stages")}
    if data.get("stages") and last["steps"] < last["stages"]:
        data.pop("steps", None)  # an earlier layer's length gives way to the stages set after it
    return from_dict(TrainConfig, data)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_to_dict(cfg: TrainConfig) -> dict:
    return to_dict(cfg)
