"""The tokenizer trainer: one entry point, one process or many (``torchrun``).

Each step: (accumulated) tokenizer forward/backward on reconstruction + quantizer (+ perceptual,
+ adversarial after warm-up) losses, a discriminator step once the GAN is on, an EMA update, and
-- every so often -- metrics, pictures and an atomic checkpoint. With the same seed on CPU, a run
resumed from a checkpoint reproduces the losses of an uninterrupted run exactly: every random
choice (which clips, where to crop, dropout of nothing else) is a function of (seed, step, rank).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from vistok.configuration import to_dict
from vistok.errors import VistokError
from vistok.losses.objective import TokenizerLoss
from vistok.metrics.quality import psnr
from vistok.tokenizers.base import Tokenizer
from vistok.tokenizers.registry import TOKENIZER_CLASSES
from vistok.train.batches import build_batches
from vistok.train.checkpoint import CHECKPOINT_NAME, load_checkpoint, rng_state, save_checkpoint_on_main, set_rng_state
from vistok.train.config import TrainConfig
from vistok.train.distributed import DistInfo, any_rank, cleanup_distributed, setup_distributed, unwrap, wrap_model
from vistok.train.ema import EMA
from vistok.train.logging import MetricsLog, Progress, read_metrics
from vistok.train.pictures import save_loss_plot, save_reconstruction_grid


class TrainingDiverged(VistokError):
    """A loss became NaN or infinite; the message names the step and the terms."""


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    model_dir: Path
    last_metrics: dict


def build_tokenizer(cfg: TrainConfig) -> Tokenizer:
    if cfg.model_type not in TOKENIZER_CLASSES:
        raise VistokError(f"unknown model_type {cfg.model_type!r}; known: {sorted(TOKENIZER_CLASSES)}")
    cls = TOKENIZER_CLASSES[cfg.model_type]
    return cls(cls.config_class.preset(cfg.preset, **cfg.model))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr`` (or constant)."""
    o = cfg.optim
    if step < o.warmup_steps:
        return o.lr * (step + 1) / o.warmup_steps
    if o.schedule == "constant":
        return o.lr
    span = max(1, cfg.steps - o.warmup_steps)
    frac = min(1.0, (step - o.warmup_steps) / span)
    return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def _build_perceptual(cfg: TrainConfig):
    if cfg.perceptual_weights is None or cfg.loss.perceptual_weight == 0:
        return None
    from vistok.losses.perceptual import LPIPS

    return LPIPS.from_pretrained(cfg.perceptual_weights)


def _build_discriminator(cfg: TrainConfig, tok: Tokenizer) -> nn.Module | None:
    if cfg.loss.adversarial_weight == 0:
        return None
    from vistok.losses.adversarial import StyleGANDiscriminator3D

    kwargs = dict(cfg.discriminator)
    preset = kwargs.pop("preset", "small")
    return StyleGANDiscriminator3D.from_preset(preset, in_channels=tok.in_channels, **kwargs)


class Trainer:
    """Train a tokenizer into ``out_dir`` (checkpoints, metrics.jsonl, pictures, ``model/``)."""

    def __init__(self, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False, quiet: bool = False):
        self.cfg = cfg
        self.out = Path(out_dir)
        self.resume = resume
        self.quiet = quiet
        self.info: DistInfo = setup_distributed(cfg.device)
        torch.manual_seed(cfg.seed)
        tok = build_tokenizer(cfg)
        self.fresh_parameters: list[str] = []
        if cfg.init_from is not None and not resume:
            from vistok.train.warm_start import warm_start

            self.fresh_parameters = warm_start(tok, cfg.init_from)
        tok = tok.to(self.info.device)
        self.tokenizer = tok
        self.model = wrap_model(tok, self.info, cfg.distributed)
        self.objective = TokenizerLoss(cfg.loss, perceptual=_build_perceptual(cfg)).to(self.info.device)
        disc = _build_discriminator(cfg, tok)
        self.discriminator = disc.to(self.info.device) if disc is not None else None
        self.disc_model = wrap_model(self.discriminator, self.info, cfg.distributed) if disc is not None else None
        o = cfg.optim
        self.opt_g = torch.optim.AdamW(tok.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.opt_d = (
            torch.optim.AdamW(self.discriminator.parameters(), lr=o.disc_lr, betas=o.disc_betas, weight_decay=0.0)
            if self.discriminator is not None
            else None
        )
        self.ema = EMA(tok, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step = 0
        self.out_of_time = False
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load(self.out / CHECKPOINT_NAME)
        elif (self.out / CHECKPOINT_NAME).exists():
            raise VistokError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        self.batches = build_batches(cfg, self.info, start_step=self.step)

    # -- state ------------------------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "step": self.step,
            "model": unwrap(self.model).state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "opt_g": self.opt_g.state_dict(),
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else None,
            "opt_d": self.opt_d.state_dict() if self.opt_d is not None else None,
            "objective": self.objective.state_dict(),
            "rng": rng_state(),
            "config": json.dumps(to_dict(self.cfg)),
        }

    def _load(self, path: Path) -> None:
        state = load_checkpoint(path)
        saved = json.loads(state["config"])
        now = to_dict(self.cfg)
        for key in ("model_type", "preset", "model"):
            if saved.get(key) != now.get(key):
                raise VistokError(f"cannot resume: {key} differs from the checkpoint ({saved.get(key)!r} vs {now.get(key)!r})")
        unwrap(self.model).load_state_dict(state["model"])
        if self.ema and state["ema"]:
            self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.discriminator is not None and state["discriminator"] is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.objective.load_state_dict(state["objective"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])

    def save_checkpoint(self) -> None:
        save_checkpoint_on_main(self.out / CHECKPOINT_NAME, self._state, self.info)

    def export(self) -> Path:
        """``out/model``: the EMA weights (or raw weights without EMA) via ``save_pretrained``."""
        model = self.ema.shadow if self.ema else unwrap(self.model)
        d = self.out / "model"
        if self.info.is_main:
            model.save_pretrained(d)
            (self.out / "train_config.json").write_text(json.dumps(to_dict(self.cfg), indent=2) + "\n")
        return d

    # -- one step ---------------------------------------------------------------------------------

    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=self.info.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        cfg, step = self.cfg, self.step
        lr = lr_at(step, cfg)
        for g in self.opt_g.param_groups:
            g["lr"] = lr
        unwrap(self.model).quantizer.step_schedule(step)
        self.model.train()
        micro = batch.chunk(cfg.optim.accumulate, dim=0)
        gan_on = self.discriminator is not None and step >= cfg.loss.gan_start_step
        stats_sum: dict[str, float] = {}
        x_hats, indices = [], []
        self.opt_g.zero_grad(set_to_none=True)
        for i, video in enumerate(micro):
            sync = i == len(micro) - 1
            ctx = self.model.no_sync() if (self.info.enabled and not sync and hasattr(self.model, "no_sync")) else nullcontext()
            with ctx, self._autocast():
                out = self.model(video)
                loss, stats = self.objective.generator_loss(
                    video, out.x_hat, out.loss, step, discriminator=self.disc_model if gan_on else None
                )
            bad = not torch.isfinite(loss).item()
            if any_rank(bad, self.info.device):
                raise TrainingDiverged(
                    f"non-finite loss at step {step} (rank {self.info.rank}): "
                    + ", ".join(f"{k}={v:.4g}" for k, v in stats.items())
                    + "; lower optim.lr, use precision=fp32, or check the data"
                )
            (loss / len(micro)).backward()
            for k, v in stats.items():
                stats_sum[k] = stats_sum.get(k, 0.0) + float(v) / len(micro)
            for k, v in out.quantizer.stats.items():
                if v.numel() == 1:
                    stats_sum[f"q_{k}"] = stats_sum.get(f"q_{k}", 0.0) + float(v) / len(micro)
            stats_sum["psnr"] = stats_sum.get("psnr", 0.0) + float(psnr(out.x_hat.detach().float().clamp(-1, 1), video).mean()) / len(micro)
            x_hats.append(out.x_hat.detach())
            if out.indices is not None:
                indices.append(out.indices.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.tokenizer.parameters(), cfg.optim.grad_clip)
        if not torch.isfinite(grad_norm):
            raise TrainingDiverged(f"non-finite gradient norm at step {step}; lower optim.lr or use fp32")
        self.opt_g.step()
        stats_sum["grad_norm"] = float(grad_norm)
        stats_sum["lr"] = lr

        if gan_on:
            for g in self.opt_d.param_groups:
                g["lr"] = cfg.optim.disc_lr * lr / cfg.optim.lr
            self.opt_d.zero_grad(set_to_none=True)
            for video, x_hat in zip(micro, x_hats):
                with self._autocast():
                    d_loss, d_stats = self.objective.discriminator_loss(video, x_hat, step, self.disc_model)
                (d_loss / len(micro)).backward()
                for k, v in d_stats.items():
                    stats_sum[k] = stats_sum.get(k, 0.0) + float(v) / len(micro)
            self.opt_d.step()
        if self.ema:
            self.ema.update(self.tokenizer)
        self._last_indices = torch.cat([i.flatten() for i in indices]) if indices else None
        self.step += 1
        return stats_sum

    # -- the loop ---------------------------------------------------------------------------------

    def fit(
        self,
        *,
        stop_after: int | None = None,
        time_budget: float | None = None,
        on_step: Callable[[int, dict], None] | None = None,
    ) -> TrainResult:
        """Train until ``cfg.steps``.

        ``stop_after``: stop after that many steps in this call without exporting (a simulated
        kill, for tests). ``time_budget``: seconds; when exceeded, the run checkpoints and exports
        the model as it is (``TrainResult.step < cfg.steps`` says so).
        """
        cfg, info = self.cfg, self.info
        log = MetricsLog(self.out / "metrics.jsonl", resume_step=self.step if self.resume else None) if info.is_main else None
        progress = Progress(cfg.steps, self.step, enabled=info.is_main and not self.quiet)
        preview = None
        window: list[torch.Tensor] = []
        window_stats: dict[str, list[float]] = {}
        t0, steps_done, last = time.time(), 0, {}
        vocab = unwrap(self.model).vocab_size
        try:
            for batch in self.batches:
                if self.step >= cfg.steps or (stop_after is not None and steps_done >= stop_after):
                    break
                if time_budget is not None and any_rank(time.time() - t0 > time_budget, info.device):
                    self.out_of_time = True
                    break
                batch = batch.to(info.device, non_blocking=True)
                if preview is None or (preview.shape[2] == 1 and batch.shape[2] > 1):
                    preview = batch[:4].clone()  # prefer clips: the grid then shows motion
                stats = self.train_step(batch)
                steps_done += 1
                for k, v in stats.items():
                    window_stats.setdefault(k, []).append(v)
                if self._last_indices is not None:
                    window.append(self._last_indices)
                progress.update({"loss": stats.get("loss", float("nan")), "psnr": stats.get("psnr", float("nan"))})
                if on_step:
                    on_step(self.step, stats)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    last = {k: sum(v) / len(v) for k, v in window_stats.items()}
                    if window and vocab:
                        last.update(_usage(torch.cat(window), vocab))
                    last["steps_per_s"] = steps_done / max(time.time() - t0, 1e-9)
                    if log:
                        log.write(self.step, last)
                    window, window_stats = [], {}
                if self.step % cfg.image_every == 0 or self.step == cfg.steps:
                    self._pictures(preview)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.save_checkpoint()
        finally:
            progress.close()
        if self.out_of_time:
            if self.step % cfg.checkpoint_every:
                self.save_checkpoint()
            self._pictures(preview)
        done = self.step >= cfg.steps or self.out_of_time
        model_dir = self.export() if done else self.out / "model"
        return TrainResult(out_dir=self.out, step=self.step, model_dir=model_dir, last_metrics=last)

    @torch.no_grad()
    def _pictures(self, preview: torch.Tensor | None) -> None:
        if not self.info.is_main or preview is None:
            return
        model = self.ema.shadow if self.ema else unwrap(self.model)
        was = model.training
        model.eval()
        x_hat = model(preview).x_hat
        model.train(was)
        save_reconstruction_grid(self.out / "pictures" / f"recon_{self.step:07d}.png", preview, x_hat)
        save_reconstruction_grid(self.out / "recon_latest.png", preview, x_hat)
        save_loss_plot(self.out / "losses.png", read_metrics(self.out / "metrics.jsonl"))

    def close(self) -> None:
        cleanup_distributed()


def _usage(indices: torch.Tensor, vocab: int) -> dict[str, float]:
    """Hard codebook usage over a logging window: distinct codes, their fraction, perplexity."""
    counts = torch.bincount(indices, minlength=vocab).double()
    p = counts[counts > 0] / counts.sum()
    return {
        "codes_used": float((counts > 0).sum()),
        "usage_fraction": float((counts > 0).sum()) / vocab,
        "perplexity": float(torch.exp(-(p * p.log()).sum())),
        "tokens_seen": float(counts.sum()),
    }


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    stop_after: int | None = None,
    time_budget: float | None = None,
) -> TrainResult:
    """Run (or resume) training; the ``vistok train`` command calls this."""
    trainer = Trainer(cfg, out_dir, resume=resume, quiet=quiet)
    try:
        return trainer.fit(stop_after=stop_after, time_budget=time_budget)
    finally:
        trainer.close()
