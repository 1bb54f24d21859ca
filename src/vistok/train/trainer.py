"""The tokenizer trainer: one entry point, one process or many (``torchrun``), on the shared
:class:`~vistok.train.loop.TrainLoop`.

What it adds to the loop: the tokenizer (a preset of any registered family, optionally warm-started
from another saved tokenizer), its objective (reconstruction + quantizer, + perceptual, +
adversarial after warm-up), the discriminator and its optimizer step once the GAN is on, the
quantizer's entropy-weight schedule, codebook-usage metrics and reconstruction pictures. Every
random choice (which clips, where to crop) is a function of (seed, step, rank), so a resumed run
reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vistok.errors import VistokError
from vistok.losses.adversarial import StyleGANDiscriminator3D
from vistok.losses.objective import TokenizerLoss
from vistok.losses.perceptual import build_perceptual
from vistok.metrics.quality import psnr
from vistok.tokenizers.base import TOKENIZERS, Tokenizer
from vistok.train.batches import build_batches
from vistok.train.config import TrainConfig
from vistok.train.distributed import unwrap
from vistok.train.logging import read_metrics
from vistok.train.loop import LoopResult, TrainingDiverged, TrainLoop
from vistok.pictures import save_loss_plot, save_reconstruction_grid
from vistok.train.warm_start import warm_start

__all__ = ["Trainer", "TrainingDiverged", "TrainResult", "build_tokenizer", "train"]

TrainResult = LoopResult


def build_tokenizer(cfg: TrainConfig) -> Tokenizer:
    return TOKENIZERS.get(cfg.model_type, where="model_type")(cfg.tokenizer_config())


class Trainer(TrainLoop):
    """Train a tokenizer into ``out_dir`` (checkpoints, metrics.jsonl, pictures, ``model/``)."""

    progress_keys = ("loss", "psnr")

    def build(self) -> None:
        cfg, info = self.cfg, self.info
        torch.manual_seed(cfg.seed)
        tok = build_tokenizer(cfg)
        self.fresh_parameters: list[str] = []
        if cfg.init_from is not None and not self.resume:
            self.fresh_parameters = warm_start(tok, cfg.init_from)
        tok = tok.to(info.device)
        self.tokenizer = self.module = tok
        self.model = self.wrap(tok)
        perceptual = build_perceptual(cfg.perceptual_weights) if cfg.loss.perceptual_weight > 0 else None
        self.objective = TokenizerLoss(cfg.loss, perceptual=perceptual).to(info.device)
        self.discriminator: nn.Module | None = None
        self.disc_model: nn.Module | None = None
        o = cfg.optim
        self.optimizers = {"generator": torch.optim.AdamW(tok.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)}
        if cfg.loss.adversarial_weight > 0:
            disc = StyleGANDiscriminator3D(cfg.discriminator_config().replace(in_channels=tok.in_channels))
            self.discriminator = disc.to(info.device)
            self.disc_model = self.wrap(self.discriminator)
            self.optimizers["discriminator"] = torch.optim.AdamW(
                self.discriminator.parameters(), lr=o.disc_lr, betas=o.disc_betas, weight_decay=0.0
            )
        self._preview: torch.Tensor | None = None
        self._window_indices: list[torch.Tensor] = []

    def after_start(self) -> None:
        self.batches = build_batches(self.cfg, self.info, start_step=self.step)

    @property
    def picture_every(self) -> int:
        return self.cfg.image_every

    # -- state ------------------------------------------------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        return {
            "discriminator": self.discriminator.state_dict() if self.discriminator is not None else None,
            "objective": self.objective.state_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.discriminator is not None and state.get("discriminator") is not None:
            self.discriminator.load_state_dict(state["discriminator"])
        self.objective.load_state_dict(state["objective"])

    def check_resume(self, state: dict) -> None:
        saved, now = json.loads(state["config"]), self.cfg.to_dict()
        for key in ("model_type", "preset", "model"):
            if saved.get(key) != now.get(key):
                raise VistokError(f"cannot resume: {key} differs from the checkpoint ({saved.get(key)!r} vs {now.get(key)!r})")

    # -- one step ---------------------------------------------------------------------------------

    def next_batch(self) -> torch.Tensor:
        batch = next(self.batches).to(self.info.device, non_blocking=True)
        if self._preview is None or (self._preview.shape[2] == 1 and batch.shape[2] > 1):
            self._preview = batch[:4].clone()  # prefer clips: the grid then shows motion
        return batch

    def train_step(self, batch: torch.Tensor) -> dict[str, float]:
        cfg, step = self.cfg, self.step
        lr = self.lr()
        opt_g = self.optimizers["generator"]
        self.set_lr(opt_g, lr)
        unwrap(self.model).quantizer.step_schedule(step)
        self.model.train()
        micro = batch.chunk(cfg.optim.accumulate, dim=0)
        gan_on = self.discriminator is not None and step >= cfg.loss.gan_start_step
        x_hats: list[torch.Tensor] = []

        def generator_loss(video: torch.Tensor):
            out = self.model(video)
            loss, stats = self.objective.generator_loss(
                video, out.x_hat, out.loss, step, discriminator=self.disc_model if gan_on else None
            )
            stats = {k: float(v) for k, v in stats.items()}
            stats.update({f"q_{k}": float(v) for k, v in out.quantizer.stats.items() if v.numel() == 1})
            stats["psnr"] = float(psnr(out.x_hat.detach().float().clamp(-1, 1), video).mean())
            x_hats.append(out.x_hat.detach())
            if out.indices is not None:
                self._window_indices.append(out.indices.detach().flatten())
            return loss, stats

        opt_g.zero_grad(set_to_none=True)
        stats = self.accumulate(self.model, micro, generator_loss)
        stats["grad_norm"] = self.apply_gradients(opt_g, self.tokenizer.parameters())
        stats["lr"] = lr

        if gan_on:
            opt_d = self.optimizers["discriminator"]
            self.set_lr(opt_d, cfg.optim.disc_lr * lr / cfg.optim.lr)
            opt_d.zero_grad(set_to_none=True)
            stats.update(self.accumulate(
                self.disc_model, zip(micro, x_hats),
                lambda pair: self.objective.discriminator_loss(*pair, step, self.disc_model),
            ))
            opt_d.step()
        return stats

    def window_metrics(self) -> dict[str, float]:
        vocab = self.tokenizer.vocab_size
        if not self._window_indices or not vocab:
            return {}
        usage = _usage(torch.cat(self._window_indices), vocab)
        self._window_indices = []
        return usage

    @torch.no_grad()
    def save_pictures(self, model: nn.Module) -> None:
        preview = self._preview
        if preview is None:
            return
        was = model.training
        model.eval()
        x_hat = model(preview).x_hat
        model.train(was)
        save_reconstruction_grid(self.out / "pictures" / f"recon_{self.step:07d}.png", preview, x_hat)
        save_reconstruction_grid(self.out / "recon_latest.png", preview, x_hat)
        save_loss_plot(self.out / "losses.png", read_metrics(self.out / "metrics.jsonl"))


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
    return Trainer.run(cfg, out_dir, resume=resume, quiet=quiet, stop_after=stop_after, time_budget=time_budget)
