"""The one training loop every vistok trainer runs on.

:class:`TrainLoop` owns what all trainers share: distributed set-up (one process or ``torchrun``),
the seed, AdamW learning-rate warm-up and cosine decay, gradient accumulation (DDP ``no_sync`` on
all but the last micro-batch), DDP or FSDP2 with sharded checkpoints, activation checkpointing
and compile (:meth:`wrap`), bf16 autocast, gradient clipping, EMA weights, divergence detection,
the logging / picture / checkpoint cadence, atomic checkpoints and exact resume, the time budget,
stale temporaries of killed runs, and the export of ``out/model`` with ``save_pretrained``.

A trainer (the tokenizer trainer, the token-LM trainer, ...) supplies only what differs:
:meth:`build` (model, optimizers), :meth:`train_step` (one optimizer step, usually through
:meth:`accumulate` and :meth:`apply_gradients`), :meth:`next_batch`, optional extra checkpoint state
and :meth:`save_pictures`. With the same seed on CPU a run resumed from its checkpoint reproduces
an uninterrupted run bit for bit: every random choice is a function of ``(seed, step, rank)`` or
of RNG states the checkpoint restores.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vistok.atomic import atomic_write_text, remove_stale_temporaries
from vistok.configuration import Config, to_dict
from vistok.errors import VistokError
from vistok.paths import FolderLock, check_output_dir
from vistok.train.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    load_sharded_state,
    rng_state,
    save_checkpoint_on_main,
    save_sharded_checkpoint,
    set_rng_state,
)
from vistok.train.distributed import (
    DistInfo,
    any_rank,
    cleanup_distributed,
    full_tensors,
    is_dtensor,
    is_sharded,
    set_gradient_sync,
    setup_distributed,
    wrap_model,
)
from vistok.train.ema import EMA
from vistok.train.logging import MetricsLog, Progress


class TrainingDiverged(VistokError):
    """A loss or gradient became NaN or infinite; the message names the step and the terms."""


@dataclass
class ScaleConfig(Config):
    """How every trainer's model is laid out for training (:meth:`TrainLoop.wrap`); each trainer's
    config inherits these fields."""

    distributed: Literal["ddp", "fsdp"] = "ddp"  # across torchrun ranks: replicate (ddp) or shard (fsdp, FSDP2)
    activation_checkpointing: bool = False  # recompute each block's activations in backward (memory for time)
    compile: bool = False  # torch.compile the training forward


@dataclass
class OptimConfig(Config):
    """AdamW with linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (or constant);
    gradients clipped to ``grad_clip`` (0: no clipping), accumulated over ``accumulate`` micro-batches."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    accumulate: int = 1

    def __post_init__(self):
        if not self.lr > 0 or math.isinf(self.lr):
            raise VistokError(f"optim.lr must be a positive number, got {self.lr}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise VistokError(f"optim.betas must be two numbers in [0, 1), got {self.betas}")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip < 0:
            raise VistokError("optim.weight_decay, optim.warmup_steps and optim.grad_clip must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise VistokError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.accumulate < 1:
            raise VistokError(f"optim.accumulate must be >= 1, got {self.accumulate}")


def lr_at(step: int, optim: OptimConfig, total_steps: int) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (or constant)."""
    o = optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    frac = min(1.0, (step - o.warmup_steps) / max(1, total_steps - o.warmup_steps))
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def check_loop_settings(cfg: Any) -> None:
    """Range checks of the settings every trainer's config has (called from their ``__post_init__``)."""
    if cfg.steps is not None and cfg.steps < 1:
        raise VistokError(f"steps must be >= 1, got {cfg.steps}")
    if cfg.seed < 0:
        raise VistokError(f"seed must be >= 0, got {cfg.seed}")
    if not 0.0 <= cfg.ema_decay < 1.0:
        raise VistokError(f"ema_decay must be in [0, 1) (0: no EMA), got {cfg.ema_decay}")
    for name in ("log_every", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise VistokError(f"{name} must be >= 1, got {getattr(cfg, name)}")


@dataclass
class LoopResult:
    """What a finished (or time-budgeted) run returns."""

    out_dir: Path
    step: int
    model_dir: Path
    last_metrics: dict


class TrainLoop:
    """Base of the trainers (see the module doc). Subclasses set in :meth:`build`: ``self.module``
    (the model being trained, unwrapped), ``self.model`` (the same, wrapped for DDP/FSDP) and
    ``self.optimizers`` (name -> optimizer, the first one the main one)."""

    #: progress-bar fields (keys of train_step's stats) and the default picture cadence attribute
    progress_keys: tuple[str, ...] = ("loss",)
    progress_desc: str = "train"

    module: nn.Module
    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    #: the built model's config, when a trainer fills it in from the data (saved in checkpoints,
    #: and a resume whose data gives another one is refused)
    model_config: Config | None = None

    def __init__(self, cfg: Any, out_dir: str | Path, *, resume: bool = False, quiet: bool = False):
        self.cfg, self.out, self.resume, self.quiet = cfg, Path(out_dir), resume, quiet
        self.info: DistInfo = setup_distributed(cfg.device)
        self.step = 0
        self.out_of_time = False
        self._whole: nn.Module | None = None  # FSDP2: the main rank's unsharded copy (see whole_model)
        self.build()
        self.sharded = is_sharded(self.module)
        self.ema = EMA(self.module, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.lock: FolderLock | None = None
        if self.info.is_main:
            check_output_dir(self.out, what="run folder --out")
            self.lock = FolderLock(self.out)  # one run writes into a folder at a time
        try:
            if self.info.is_main:
                remove_stale_temporaries(self.out)
                remove_stale_temporaries(self.out / "model")
            if resume:
                self._load(self.out / CHECKPOINT_NAME)
            elif (self.out / CHECKPOINT_NAME).exists():
                raise VistokError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
            self.after_start()
        except BaseException:
            self.close()
            raise

    # -- what a trainer supplies --------------------------------------------------------------------

    def build(self) -> None:
        """Seed, build ``self.module`` / ``self.model`` / ``self.optimizers`` (and anything else)."""
        raise NotImplementedError

    def after_start(self) -> None:
        """Called once ``self.step`` is known (0, or the resumed step): e.g. position the data."""

    def next_batch(self) -> Any:
        raise NotImplementedError

    def train_step(self, batch: Any) -> dict[str, float]:
        """One optimizer step on ``batch``; returns scalar statistics (``loss`` at least)."""
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """More checkpoint entries (tensors and plain containers only); the base records
        ``model_config``."""
        return {"model_config": self.model_config.to_dict()} if self.model_config is not None else {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def check_resume(self, state: dict) -> None:
        """Raise :class:`VistokError` when the checkpoint (its ``config`` and extra state) cannot
        continue as this run; called before anything is loaded. The base refuses a ``model_config``
        other than the checkpoint's, naming the fields that differ."""
        if self.model_config is None:
            return
        saved, now = state.get("model_config") or {}, self.model_config.to_dict()
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now.get(k))
            raise VistokError(f"cannot resume: the model config differs from the checkpoint's in {diff}")

    def window_metrics(self) -> dict[str, float]:
        """Extra metrics over the last logging window (e.g. codebook usage)."""
        return {}

    def save_pictures(self, model: nn.Module) -> None:
        """Pictures of ``model`` (the whole model as it is now: :meth:`whole_model`), on the main rank."""

    @property
    def picture_every(self) -> int:
        """Steps between :meth:`save_pictures` calls (each trainer names its own setting)."""
        raise NotImplementedError

    # -- shared pieces of a step ----------------------------------------------------------------------

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` wrapped as the run's settings say (``distributed``: ddp or fsdp across ranks,
        ``activation_checkpointing``, ``compile``); what :meth:`build` calls for every trained module.
        For ``self.module`` under FSDP2 the main rank first keeps an unsharded copy, which
        :meth:`whole_model` fills with the gathered weights for pictures and export."""
        cfg = self.cfg
        strategy = cfg.distributed
        if module is self.module and strategy == "fsdp" and self.info.enabled and self.info.is_main:
            self._whole = copy.deepcopy(module).eval().requires_grad_(False)
        return wrap_model(module, self.info, strategy, activation_checkpointing=cfg.activation_checkpointing,
                          compile=cfg.compile)

    def whole_model(self, ema: bool = True) -> nn.Module | None:
        """The trained model as one whole module: the EMA weights when ``ema`` and the run keeps them,
        else the raw ones. Under FSDP2 every rank must call this (the shards are gathered) and only
        the main rank gets the module (the others None)."""
        use_ema = ema and self.ema is not None
        if not self.sharded:
            return self.ema.shadow if use_ema else self.module
        state = full_tensors(self.ema.state() if use_ema else self.module.state_dict())
        if not self.info.is_main:
            return None
        self._whole.load_state_dict(state)
        return self._whole

    @property
    def total_steps(self) -> int:
        """Steps the run takes in all (``cfg.steps``; a trainer with phases adds them up)."""
        return self.cfg.steps

    def lr(self) -> float:
        return lr_at(self.step, self.cfg.optim, self.total_steps)

    def set_lr(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        for g in optimizer.param_groups:
            g["lr"] = lr

    def autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def check_finite(self, loss: torch.Tensor, stats: dict | None = None) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if any_rank(bad, self.info.device):
            terms = ", ".join(f"{k}={float(v):.4g}" for k, v in (stats or {}).items())
            raise TrainingDiverged(
                f"non-finite loss at step {self.step} (rank {self.info.rank})" + (f": {terms}" if terms else "")
                + "; lower optim.lr, use precision=fp32, or check the data"
            )

    def accumulate(
        self, model: nn.Module, micro_batches: Iterable[Any], loss_fn: Callable[[Any], tuple[torch.Tensor, dict]]
    ) -> dict[str, float]:
        """Forward/backward every micro-batch (under autocast; DDP syncs gradients on the last one
        only), each loss divided by their number; returns the statistics averaged over them.
        ``loss_fn(micro_batch) -> (loss, stats)``; a non-finite loss on any rank stops the run."""
        chunks = list(micro_batches)
        n = len(chunks)
        totals: dict[str, float] = {}
        for i, chunk in enumerate(chunks):
            with set_gradient_sync(model, i == n - 1 or not self.info.enabled):
                with self.autocast():
                    loss, stats = loss_fn(chunk)
                self.check_finite(loss, stats)
                (loss / n).backward()
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + float(v) / n
        return totals

    def apply_gradients(self, optimizer: torch.optim.Optimizer, parameters) -> float:
        """Clip (``optim.grad_clip``; 0 leaves them) and step; returns the gradient norm."""
        params = [p for p in parameters if p.grad is not None]
        clip = self.cfg.optim.grad_clip
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))
        if is_dtensor(norm):  # FSDP2: the norm over all ranks' shards
            norm = norm.full_tensor()
        if not torch.isfinite(norm):
            raise TrainingDiverged(f"non-finite gradient norm at step {self.step}; lower optim.lr or use precision=fp32")
        optimizer.step()
        return float(norm)

    # -- state ----------------------------------------------------------------------------------------

    def _state(self) -> dict:
        state = {
            "step": self.step,
            "model": self.module.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()},
            "rng": rng_state(),
            "config": json.dumps(to_dict(self.cfg)),
        }
        state.update(self.extra_state())
        return state

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path)
        if "optimizers" not in state or "config" not in state:
            raise VistokError(f"{path} was written by an older vistok and cannot be resumed by this one")
        if ("shards" in state) != self.sharded:
            how = "sharded (FSDP2 on several ranks)" if "shards" in state else "whole (one process or DDP)"
            raise VistokError(f"cannot resume: {path} is {how}; resume it with the distributed setting and rank count it was written with")
        if self.sharded:
            state = load_sharded_state(state, path.parent / state["shards"], next(self.module.parameters()))
        self.check_resume(state)
        self.module.load_state_dict(state["model"])
        if self.ema and state.get("ema"):
            self.ema.load_state_dict(state["ema"])
        for k, opt in self.optimizers.items():
            if k in state["optimizers"]:
                opt.load_state_dict(state["optimizers"][k])
        self.load_extra_state(state)
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def save_checkpoint(self) -> None:
        if self.sharded:
            save_sharded_checkpoint(self.out / CHECKPOINT_NAME, self._state(), self.info)
        else:
            save_checkpoint_on_main(self.out / CHECKPOINT_NAME, self._state, self.info)

    def export(self) -> Path:
        """``out/model``: the EMA weights (or the raw ones without EMA) via ``save_pretrained``, and
        ``out/train_config.json``."""
        d = self.out / "model"
        model = self.whole_model()
        if self.info.is_main:
            model.save_pretrained(d)
            atomic_write_text(self.out / "train_config.json", json.dumps(to_dict(self.cfg), indent=2) + "\n")
        return d

    # -- the loop -------------------------------------------------------------------------------------

    def fit(
        self,
        *,
        stop_after: int | None = None,
        time_budget: float | None = None,
        on_step: Callable[[int, dict], None] | None = None,
    ) -> LoopResult:
        """Train until :attr:`total_steps`.

        ``stop_after``: stop after that many steps in this call without exporting (a simulated kill,
        for tests). ``time_budget``: seconds; once exceeded (after at least one step) the run
        checkpoints, draws its pictures and exports the model as it is (``result.step < self.total_steps``).
        """
        cfg, info = self.cfg, self.info
        log = MetricsLog(self.out / "metrics.jsonl", resume_step=self.step if self.resume else None) if info.is_main else None
        progress = Progress(self.total_steps, self.step, enabled=info.is_main and not self.quiet, desc=self.progress_desc)
        t0, done, window, last = time.time(), 0, {}, {}
        try:
            while self.step < self.total_steps and (stop_after is None or done < stop_after):
                if time_budget is not None and done and any_rank(time.time() - t0 > time_budget, info.device):
                    self.out_of_time = True
                    break
                stats = self.train_step(self.next_batch())
                if self.ema:
                    self.ema.update(self.module)
                self.step += 1
                done += 1
                for k, v in stats.items():
                    window.setdefault(k, []).append(v)
                progress.update({k: stats.get(k, float("nan")) for k in self.progress_keys})
                if on_step:
                    on_step(self.step, stats)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    last = {k: sum(v) / len(v) for k, v in window.items()}
                    last.update(self.window_metrics())
                    last["steps_per_s"] = done / max(time.time() - t0, 1e-9)
                    if log:
                        log.write(self.step, last)
                    window = {}
                if self.step % self.picture_every == 0 or self.step == self.total_steps:
                    self._draw_pictures()
                if self.step % cfg.checkpoint_every == 0 or self.step == self.total_steps:
                    self.save_checkpoint()
        finally:
            progress.close()
        if self.out_of_time:
            if self.step % cfg.checkpoint_every:
                self.save_checkpoint()
            self._draw_pictures()
        finished = self.step >= self.total_steps or self.out_of_time
        model_dir = self.export() if finished else self.out / "model"
        return LoopResult(out_dir=self.out, step=self.step, model_dir=model_dir, last_metrics=last)

    def _draw_pictures(self) -> None:
        model = self.whole_model()  # every rank: under FSDP2 this gathers the shards
        if self.info.is_main:
            self.save_pictures(model)

    def close(self) -> None:
        if getattr(self, "lock", None) is not None:
            self.lock.release()
            self.lock = None
        cleanup_distributed()

    @classmethod
    def run(cls, cfg: Any, out_dir: str | Path, *, resume: bool = False, quiet: bool = False,
            stop_after: int | None = None, time_budget: float | None = None) -> LoopResult:
        """Build, train (or resume) and clean up: what ``vistok train`` / ``train-lm`` call."""
        trainer = cls(cfg, out_dir, resume=resume, quiet=quiet)
        try:
            return trainer.fit(stop_after=stop_after, time_budget=time_budget)
        finally:
            trainer.close()
