"""The token language-model trainer: one entry point, alone or under ``torchrun`` (DDP).

Built on the shared :class:`~vistok.train.loop.TrainLoop` (AdamW with linear warm-up and cosine
decay, accumulation, gradient clipping, optional EMA, bf16 autocast, checkpoints, time budget). Every
random choice is a function of ``(seed, step, rank)``: the items of a step come from a per-epoch
permutation seeded by ``(seed, epoch)`` and sliced by step and rank, and the masks and class
dropout of a step are drawn from a generator seeded by ``(seed, step, rank)``; dropout uses the
global RNG, whose state the checkpoint saves. So a run resumed from its checkpoint reproduces an
uninterrupted run bit for bit (tested). Writes ``metrics.jsonl`` (loss, masked accuracy, lr,
grad norm), ``checkpoint.pt`` (atomic), sample pictures when a tokenizer is given, and exports
``model/`` (EMA weights if any) with ``save_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vistok.configuration import apply_overrides, from_dict, load_named
from vistok.errors import VistokError
from vistok.generate.base import TokenLM, build_lm
from vistok.generate.config import LM_PRESETS, LMConfig, lm_config
from vistok.generate.data import TokenSet, open_token_data
from vistok.generate.render import check_tokenizer, decode_to_uint8
from vistok.generate.tokens import factorized_cross_entropy
from vistok.tokenizers.registry import load_tokenizer
from vistok.train.logging import read_metrics
from vistok.train.seeds import epoch_seed, step_seed
from vistok.train.loop import LoopResult, OptimConfig, ScaleConfig, TrainingDiverged, TrainLoop, check_loop_settings
from vistok.pictures import save_loss_plot, save_picture, tile

__all__ = ["LMOptimConfig", "LMTrainConfig", "LMTrainer", "LMTrainResult", "TrainingDiverged",
           "load_lm_train_config", "train_lm"]

LMTrainResult = LoopResult


@dataclass
class LMOptimConfig(OptimConfig):
    """The shared optimizer settings with MaskGIT's defaults."""

    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 0.045  # MaskGIT's setting


@dataclass
class LMTrainConfig(ScaleConfig):
    """``preset``: a model size (:data:`LM_PRESETS`); ``model``: :class:`LMConfig` overrides (``kind``,
    ``num_classes``, ``frame_condition_prob``, ...), validated against :class:`LMConfig` when this
    config is built. ``data``: a token set, an encode file or a folder of them. ``tokenizer``: the
    tokenizer the tokens came from, to draw sample pictures every ``sample_every`` steps."""

    preset: str = "lm-tiny"
    model: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    batch_size: int = 64
    steps: int = 2000
    seed: int = 0
    optim: LMOptimConfig = field(default_factory=LMOptimConfig)
    ema_decay: float = 0.0
    precision: Literal["fp32", "bf16"] = "fp32"
    log_every: int = 10
    checkpoint_every: int = 500
    sample_every: int = 500
    tokenizer: str | None = None
    sample_steps: int = 12
    sample_cfg: float = 1.0
    sample_temperature: float = 1.0
    samples_per_class: int = 4
    device: str | None = None

    def __post_init__(self):
        if self.preset not in LM_PRESETS:
            raise VistokError(f"unknown LM preset {self.preset!r}; choose from {sorted(LM_PRESETS)}")
        check_loop_settings(self)
        for name in ("batch_size", "sample_every", "sample_steps", "samples_per_class"):
            if getattr(self, name) < 1:
                raise VistokError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sample_temperature < 0:
            raise VistokError(f"sample_temperature must be >= 0, got {self.sample_temperature}")
        lm_config(self.preset, prefix="model.", **self.model)  # unknown or ill-typed model.* keys fail here


# Training settings per model size (a YAML file may start from one with ``base: lm-tiny``).
LM_TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "lm-tiny": dict(preset="lm-tiny", batch_size=64, steps=3000, optim=dict(lr=1e-3, warmup_steps=100),
                    log_every=20, checkpoint_every=500, sample_every=500),
    "lm-small": dict(preset="lm-small", batch_size=128, steps=50_000, optim=dict(lr=4e-4, warmup_steps=1000),
                     ema_decay=0.999, log_every=50, checkpoint_every=2000, sample_every=2000),
    "lm-base": dict(preset="lm-base", batch_size=256, steps=300_000, optim=dict(lr=1e-4, warmup_steps=5000),
                    ema_decay=0.9999, precision="bf16", log_every=100, checkpoint_every=5000, sample_every=5000),
    "lm-large": dict(preset="lm-large", batch_size=256, steps=300_000, optim=dict(lr=1e-4, warmup_steps=5000),
                     ema_decay=0.9999, precision="bf16", log_every=100, checkpoint_every=5000, sample_every=5000),
}


def load_lm_train_config(name_or_path: str | Path, overrides: list[str] | None = None) -> LMTrainConfig:
    """A preset name (``lm-tiny``) or a YAML file (which may name a ``base`` preset), then overrides."""
    data, _ = load_named(name_or_path, LM_TRAIN_PRESETS, "an LM preset")
    return from_dict(LMTrainConfig, apply_overrides(data, overrides or []))


def model_config_for(cfg: LMTrainConfig, data: TokenSet) -> LMConfig:
    """The preset with the overrides, its data-dependent fields filled in from (and checked
    against) the token set."""
    mc = lm_config(cfg.preset, **cfg.model)
    fill: dict[str, Any] = {"tokenizer_id": data.model_id}
    if mc.vocab_size == 0:
        fill["vocab_size"] = data.vocab_size
    elif mc.vocab_size != data.vocab_size:
        raise VistokError(f"model.vocab_size={mc.vocab_size} but the tokens use a vocabulary of {data.vocab_size}")
    if mc.num_classes is None:
        fill["num_classes"] = data.num_classes
    elif mc.num_classes > 0 and data.labels is None:
        raise VistokError(f"model.num_classes={mc.num_classes} but {cfg.data} has no labels")
    elif mc.num_classes > 0 and mc.num_classes != data.num_classes:
        raise VistokError(f"model.num_classes={mc.num_classes} but the token set has {data.num_classes} classes")
    if (fill.get("num_classes", mc.num_classes) or 0) > 0:
        fill["class_names"] = data.class_names
    else:
        fill["class_names"] = []
    if mc.max_grid is None:
        fill["max_grid"] = data.grid
    elif any(g > m for g, m in zip(data.grid, mc.max_grid)):
        raise VistokError(f"the token grids {data.grid} exceed model.max_grid {mc.max_grid}")
    return mc.replace(**fill)


class LMTrainer(TrainLoop):
    """Train a token language model into ``out_dir``."""

    progress_keys = ("loss", "accuracy")
    progress_desc = "train-lm"

    def build(self) -> None:
        cfg, info = self.cfg, self.info
        if cfg.data is None:
            raise VistokError("no training tokens: pass --data (a token set .npz, or a folder of `vistok encode` files)")
        self.data = open_token_data(cfg.data)
        self.model_config = model_config_for(cfg, self.data)
        global_batch = cfg.batch_size * info.world_size
        if len(self.data) < global_batch:
            raise VistokError(f"{len(self.data)} token grids are fewer than one batch of {global_batch}; lower batch_size")
        self.steps_per_epoch = len(self.data) // global_batch
        self.indices = torch.from_numpy(self.data.indices)
        self.labels = torch.from_numpy(self.data.labels) if self.model_config.num_classes else None
        torch.manual_seed(cfg.seed)
        self.lm: TokenLM = build_lm(self.model_config).to(info.device)
        self.module = self.lm
        self.model = self.wrap(self.lm)
        decay = [p for p in self.lm.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.lm.parameters() if p.ndim < 2]
        o = cfg.optim
        self.optimizers = {"lm": torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=o.betas,
        )}
        self._perm: tuple[int, torch.Tensor] | None = None
        self.tokenizer = None
        if info.is_main and cfg.tokenizer is not None:
            self.tokenizer = load_tokenizer(cfg.tokenizer, map_location=str(info.device))
            check_tokenizer(self.model_config, self.tokenizer)

    @property
    def picture_every(self) -> int:
        return self.cfg.sample_every

    # -- data -------------------------------------------------------------------------------------

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's ``(indices (b t' h' w'), labels (b,) | None)`` for global step ``step``."""
        epoch, k = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch))
            self._perm = (epoch, torch.randperm(len(self.data), generator=g))
        b, r = self.cfg.batch_size, self.info.rank
        start = (k * self.info.world_size + r) * b
        items = self._perm[1][start : start + b]
        labels = self.labels[items].to(self.info.device) if self.labels is not None else None
        return self.indices[items].to(self.info.device), labels

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.batch(self.step)

    # -- one step ---------------------------------------------------------------------------------

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor | None]) -> dict[str, float]:
        cfg, step = self.cfg, self.step
        lr = self.lr()
        opt = self.optimizers["lm"]
        self.set_lr(opt, lr)
        indices, labels = batch
        gen = torch.Generator(device=self.info.device).manual_seed(step_seed(cfg.seed, step, self.info.rank))
        self.model.train()
        n = cfg.optim.accumulate
        micro = zip(indices.chunk(n), labels.chunk(n) if labels is not None else [None] * n)

        def lm_loss(item):
            idx, lab = item
            prepared = self.lm.training_batch(idx, lab, gen)
            logits = self.model(**prepared.inputs)
            loss, accuracy = factorized_cross_entropy(logits, prepared.targets, prepared.select)
            return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}

        opt.zero_grad(set_to_none=True)
        stats = self.accumulate(self.model, micro, lm_loss)
        stats["grad_norm"] = self.apply_gradients(opt, self.lm.parameters())
        stats["lr"] = lr
        return stats

    # -- pictures ---------------------------------------------------------------------------------

    def save_pictures(self, model: nn.Module) -> None:
        self.save_samples(model)
        save_loss_plot(self.out / "losses.png", read_metrics(self.out / "metrics.jsonl"), keys=["loss", "accuracy", "lr"])

    @torch.no_grad()
    def save_samples(self, model: TokenLM) -> Path | None:
        """Decode a few samples of ``model`` (``samples_per_class`` per class, up to 10 classes) to
        ``samples/step_XXXXXXX.png`` and ``samples_latest.png`` (main rank, with a tokenizer only).
        Sampling draws from its own seeded generator, never from the training RNG."""
        if not self.info.is_main or self.tokenizer is None:
            return None
        cfg = self.cfg
        per = cfg.samples_per_class
        if self.model_config.num_classes:
            labels = torch.arange(min(self.model_config.num_classes, 10), device=self.info.device).repeat_interleave(per)
            kw: dict[str, Any] = {"cfg_scale": cfg.sample_cfg}
        else:
            labels, kw = None, {"num_samples": 2 * per}
        if self.model_config.kind == "mlm":
            kw["steps"] = cfg.sample_steps
        gen = torch.Generator(device=self.info.device).manual_seed(cfg.seed)
        tokens = model.generate(labels, temperature=cfg.sample_temperature, generator=gen, **kw)
        picture = tile(decode_to_uint8(self.tokenizer, tokens), columns=per)
        save_picture(self.out / "samples" / f"step_{self.step:07d}.png", picture, scale=2)
        return save_picture(self.out / "samples_latest.png", picture, scale=2)


def train_lm(cfg: LMTrainConfig, out_dir: str | Path, *, resume: bool = False, quiet: bool = False,
             stop_after: int | None = None, time_budget: float | None = None) -> LMTrainResult:
    """Train (or resume) a token language model; see :class:`LMTrainer`."""
    return LMTrainer.run(cfg, out_dir, resume=resume, quiet=quiet, stop_after=stop_after, time_budget=time_budget)
