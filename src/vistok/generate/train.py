"""The token language-model trainer: one entry point, alone or under ``torchrun`` (DDP).

AdamW with linear warm-up and cosine decay, gradient clipping, optional EMA, bf16 autocast. Every
random choice is a function of ``(seed, step, rank)``: the items of a step come from a per-epoch
permutation seeded by ``(seed, epoch)`` and sliced by step and rank, and the masks and class
dropout of a step are drawn from a generator seeded by ``(seed, step, rank)``; dropout uses the
global RNG, whose state the checkpoint saves. So a run resumed from its checkpoint reproduces an
uninterrupted run bit for bit (tested). Writes ``metrics.jsonl`` (loss, masked accuracy, lr,
grad norm), ``checkpoint.pt`` (atomic), sample pictures when a tokenizer is given, and exports
``model/`` (EMA weights if any) with ``save_pretrained``.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vistok.configuration import apply_overrides, from_dict, load_yaml, to_dict
from vistok.errors import VistokError
from vistok.generate.base import TokenLM, build_lm
from vistok.generate.config import LM_PRESETS, LMConfig, lm_config
from vistok.generate.data import TokenSet, open_token_data
from vistok.generate.tokens import factorized_cross_entropy
from vistok.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint_on_main, set_rng_state
from vistok.train.distributed import DistInfo, any_rank, cleanup_distributed, setup_distributed, wrap_model
from vistok.train.ema import EMA
from vistok.train.logging import MetricsLog, Progress


class TrainingDiverged(VistokError):
    """A loss became NaN or infinite; the message names the step."""


@dataclass
class LMOptimConfig:
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.96)
    weight_decay: float = 0.045  # MaskGIT's setting
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0


@dataclass
class LMTrainConfig:
    """``preset``: a model size (:data:`LM_PRESETS`); ``model``: :class:`LMConfig` overrides (``kind``,
    ``num_classes``, ``frame_condition_prob``, ...). ``data``: a token set, an encode file or a
    folder of them. ``tokenizer``: the tokenizer the tokens came from, to draw sample pictures every
    ``sample_every`` steps (none without it)."""

    preset: str = "lm-tiny"
    model: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    batch_size: int = 64
    steps: int = 2000
    seed: int = 0
    optim: LMOptimConfig = field(default_factory=LMOptimConfig)
    ema_decay: float = 0.0
    precision: str = "fp32"
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
        if self.precision not in ("fp32", "bf16"):
            raise VistokError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        for name in ("batch_size", "steps", "log_every", "checkpoint_every", "sample_every", "sample_steps", "samples_per_class"):
            if getattr(self, name) < 1:
                raise VistokError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise VistokError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise VistokError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.optim.warmup_steps < 0 or self.optim.lr <= 0:
            raise VistokError("optim.lr must be > 0 and optim.warmup_steps >= 0")


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
    text = str(name_or_path)
    if text in LM_TRAIN_PRESETS:
        data: dict[str, Any] = json.loads(json.dumps(LM_TRAIN_PRESETS[text]))
    elif Path(text).suffix in (".yaml", ".yml") or Path(text).is_file():
        raw = load_yaml(text)
        base = raw.pop("base", None)
        if base is not None and base not in LM_TRAIN_PRESETS:
            raise VistokError(f"{text}: unknown base preset {base!r}; choose from {sorted(LM_TRAIN_PRESETS)}")
        data = _merge(json.loads(json.dumps(LM_TRAIN_PRESETS[base])) if base else {}, raw)
    else:
        raise VistokError(f"{text!r} is neither an LM preset ({', '.join(sorted(LM_TRAIN_PRESETS))}) nor a YAML file")
    return from_dict(LMTrainConfig, apply_overrides(data, overrides or []))


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


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


def lr_at(step: int, cfg: LMTrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    frac = min(1.0, (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps))
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a hash of ``keys`` (non-negative integers)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s item order (the same on every rank)."""
    return derive_seed(seed, 0, epoch)


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the masks and class dropout of one step on one rank."""
    return derive_seed(seed, 1, step, rank)


@dataclass
class LMTrainResult:
    out_dir: Path
    step: int
    model_dir: Path
    last_metrics: dict


class LMTrainer:
    """Train a token language model into ``out_dir``."""

    def __init__(self, cfg: LMTrainConfig, out_dir: str | Path, *, resume: bool = False, quiet: bool = False):
        if cfg.data is None:
            raise VistokError("no training tokens: pass --data (a token set .npz, or a folder of `vistok encode` files)")
        self.cfg, self.out, self.resume, self.quiet = cfg, Path(out_dir), resume, quiet
        self.info: DistInfo = setup_distributed(cfg.device)
        self.data = open_token_data(cfg.data)
        self.model_config = model_config_for(cfg, self.data)
        global_batch = cfg.batch_size * self.info.world_size
        if len(self.data) < global_batch:
            raise VistokError(f"{len(self.data)} token grids are fewer than one batch of {global_batch}; lower batch_size")
        self.steps_per_epoch = len(self.data) // global_batch
        self.indices = torch.from_numpy(self.data.indices)
        self.labels = torch.from_numpy(self.data.labels) if self.model_config.num_classes else None
        torch.manual_seed(cfg.seed)
        self.lm: TokenLM = build_lm(self.model_config).to(self.info.device)
        self.model = wrap_model(self.lm, self.info, "ddp")
        decay = [p for p in self.lm.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.lm.parameters() if p.ndim < 2]
        o = cfg.optim
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr, betas=o.betas,
        )
        self.ema = EMA(self.lm, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step = 0
        self.out_of_time = False
        self._perm: tuple[int, torch.Tensor] | None = None
        self.tokenizer = None
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if cfg.tokenizer is not None:
                from vistok.generate.render import check_tokenizer
                from vistok.tokenizers.registry import load_tokenizer

                self.tokenizer = load_tokenizer(cfg.tokenizer, map_location=str(self.info.device))
                check_tokenizer(self.model_config, self.tokenizer)
        if resume:
            self._load(self.out / CHECKPOINT_NAME)
        elif (self.out / CHECKPOINT_NAME).exists():
            raise VistokError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")

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

    # -- state ------------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "step": self.step,
            "model": self.lm.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "opt": self.opt.state_dict(),
            "rng": rng_state(),
            "config": json.dumps(to_dict(self.cfg)),
            "model_config": json.dumps(self.model_config.to_dict()),
        }

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path)
        saved = json.loads(state["model_config"])
        if saved != self.model_config.to_dict():
            diff = sorted(k for k in saved if saved.get(k) != self.model_config.to_dict().get(k))
            raise VistokError(f"cannot resume: the model config differs from the checkpoint's in {diff}")
        self.lm.load_state_dict(state["model"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def save_checkpoint(self) -> None:
        save_checkpoint_on_main(self.out / CHECKPOINT_NAME, self._state, self.info)

    def export(self) -> Path:
        """``out/model``: the EMA weights (or the raw ones) with ``save_pretrained``."""
        d = self.out / "model"
        if self.info.is_main:
            (self.ema.shadow if self.ema else self.lm).save_pretrained(d)
            (self.out / "train_config.json").write_text(json.dumps(to_dict(self.cfg), indent=2) + "\n")
        return d

    # -- one step ---------------------------------------------------------------------------------

    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self) -> dict[str, float]:
        cfg, step = self.cfg, self.step
        lr = lr_at(step, cfg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        indices, labels = self.batch(step)
        gen = torch.Generator(device=self.info.device).manual_seed(step_seed(cfg.seed, step, self.info.rank))
        self.model.train()
        batch = self.lm.training_batch(indices, labels, gen)
        with self._autocast():
            logits = self.model(**batch.inputs)
        loss, accuracy = factorized_cross_entropy(logits, batch.targets, batch.select)
        if any_rank(not bool(torch.isfinite(loss)), self.info.device):
            raise TrainingDiverged(f"non-finite loss at step {step} (rank {self.info.rank}); lower optim.lr or use precision=fp32")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.lm.parameters(), cfg.optim.grad_clip)
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(f"non-finite gradient norm at step {step}; lower optim.lr or use fp32")
        self.opt.step()
        if self.ema:
            self.ema.update(self.lm)
        self.step += 1
        return {"loss": float(loss.detach()), "accuracy": float(accuracy), "grad_norm": float(grad_norm), "lr": lr}

    # -- the loop ---------------------------------------------------------------------------------

    def fit(self, *, stop_after: int | None = None, time_budget: float | None = None,
            on_step: Callable[[int, dict], None] | None = None) -> LMTrainResult:
        """Train until ``cfg.steps``. ``stop_after``: stop after that many steps of this call
        without exporting (a simulated kill, for tests). ``time_budget``: seconds; when exceeded the
        run (after at least one step) checkpoints and exports the model as it is
        (``LMTrainResult.step < cfg.steps``)."""
        cfg, info = self.cfg, self.info
        log = MetricsLog(self.out / "metrics.jsonl", resume_step=self.step if self.resume else None) if info.is_main else None
        progress = Progress(cfg.steps, self.step, enabled=info.is_main and not self.quiet, desc="train-lm")
        t0, done, window, last = time.time(), 0, {}, {}
        try:
            while self.step < cfg.steps and (stop_after is None or done < stop_after):
                if time_budget is not None and done and any_rank(time.time() - t0 > time_budget, info.device):
                    self.out_of_time = True
                    break
                stats = self.train_step()
                done += 1
                for k, v in stats.items():
                    window.setdefault(k, []).append(v)
                progress.update({"loss": stats["loss"], "acc": stats["accuracy"]})
                if on_step:
                    on_step(self.step, stats)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    last = {k: sum(v) / len(v) for k, v in window.items()}
                    last["steps_per_s"] = done / max(time.time() - t0, 1e-9)
                    if log:
                        log.write(self.step, last)
                    window = {}
                if self.step % cfg.sample_every == 0 or self.step == cfg.steps:
                    self.save_samples()
                    self.save_plot()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        finally:
            progress.close()
        if self.out_of_time:
            if self.step % cfg.checkpoint_every:
                self.save_checkpoint()
            self.save_samples()
            self.save_plot()
        finished = self.step >= cfg.steps or self.out_of_time
        model_dir = self.export() if finished else self.out / "model"
        return LMTrainResult(out_dir=self.out, step=self.step, model_dir=model_dir, last_metrics=last)

    def save_plot(self) -> None:
        """``losses.png``: loss and masked accuracy curves so far (main rank)."""
        if self.info.is_main:
            from vistok.train.logging import read_metrics
            from vistok.train.pictures import save_loss_plot

            save_loss_plot(self.out / "losses.png", read_metrics(self.out / "metrics.jsonl"), keys=["loss", "accuracy", "lr"])

    @torch.no_grad()
    def save_samples(self) -> Path | None:
        """Decode a few samples (``samples_per_class`` per class, up to 10 classes) to
        ``samples/step_XXXXXXX.png`` and ``samples_latest.png`` (main rank, with a tokenizer only).
        Sampling draws from its own seeded generator, never from the training RNG."""
        if not self.info.is_main or self.tokenizer is None:
            return None
        from vistok.generate.render import decode_to_uint8, tile
        from vistok.train.pictures import save_picture

        cfg = self.cfg
        model = self.ema.shadow if self.ema else self.lm
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

    def close(self) -> None:
        cleanup_distributed()


def train_lm(cfg: LMTrainConfig, out_dir: str | Path, *, resume: bool = False, quiet: bool = False,
             stop_after: int | None = None, time_budget: float | None = None) -> LMTrainResult:
    """Train (or resume) a token language model; see :class:`LMTrainer`."""
    trainer = LMTrainer(cfg, out_dir, resume=resume, quiet=quiet)
    try:
        return trainer.fit(stop_after=stop_after, time_budget=time_budget)
    finally:
        trainer.close()
