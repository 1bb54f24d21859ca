"""The recognition trainer: optional masked pretraining, then supervised fine-tuning, in one run.

Built on the shared :class:`~vistok.train.loop.TrainLoop` (checkpoints, exact resume, accumulation,
bf16, DDP under ``torchrun``, time budget, export). The run's steps are ``pretrain_steps`` of masked
modelling over every training item (labels unused), then ``steps`` of cross-entropy on
``label_fraction`` of the labels; each phase has its own AdamW and its own warm-up and cosine
schedule, and the encoder at the end of pretraining is exported to ``out/pretrained`` so further
fine-tunings can start from it (``init_from``). Item order comes from per-epoch permutations
seeded by ``(seed, phase, epoch)``, masks from ``(seed, step, rank)``: a resumed run repeats an
uninterrupted one bit for bit. Writes ``metrics.jsonl`` (loss, accuracy or mse, lr, phase),
``losses.png``, ``checkpoint.pt`` and ``model/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from vistok.atomic import atomic_write_text
from vistok.configuration import to_dict
from vistok.errors import VistokError
from vistok.pictures import save_loss_plot
from vistok.recognize.config import ClassifierTrainConfig, RecognizerConfig
from vistok.recognize.data import RecognitionSet, labelled_items, load_recognition_set
from vistok.recognize.model import Recognizer, load_recognizer
from vistok.tokenizers.registry import load_tokenizer
from vistok.train.logging import read_metrics
from vistok.train.loop import LoopResult, TrainLoop, lr_at
from vistok.train.seeds import derive_seed, step_seed

PRETRAINED_DIR = "pretrained"


class ClassifierTrainer(TrainLoop):
    """Train a :class:`Recognizer` into ``out_dir`` (see the module doc)."""

    progress_keys = ("loss", "accuracy")
    progress_desc = "train-classifier"

    def build(self) -> None:
        cfg, info = self.cfg, self.info
        if cfg.data is None:
            raise VistokError("no training data: pass --data (a class-folder tree or an IDX folder)")
        wanted = cfg.model_config()
        self.tokenizer = None
        if wanted.needs_tokens:
            self.tokenizer = load_tokenizer(cfg.tokenizer, map_location="cpu")
        with tqdm(desc="read data", unit="item", leave=False, disable=self.quiet or not info.is_main) as bar:
            def progress(done: int, total: int) -> None:
                bar.total, bar.n = total, done
                bar.refresh()

            self.data: RecognitionSet = load_recognition_set(
                cfg.data, size=cfg.size, frames=cfg.frames, split="train", limit=cfg.limit, tokenizer=self.tokenizer,
                cache_dir=cfg.cache_dir, progress=progress)
        self.model_config = self.fill_model_config(wanted)
        self.pretrain_steps = cfg.pretrain_steps if cfg.pretraining else 0
        self.labelled = labelled_items(self.data.labels, cfg.label_fraction, cfg.seed)
        global_batch = cfg.batch_size * info.world_size
        pools = [len(self.labelled)] + ([len(self.data)] if self.pretrain_steps else [])
        if min(pools) < global_batch:
            raise VistokError(f"{min(pools)} training items are fewer than one batch of {global_batch}; lower batch_size")
        torch.manual_seed(cfg.seed)
        self.recognizer = Recognizer(self.model_config).to(info.device)
        if cfg.init_from:
            self.recognizer.load_encoder(load_recognizer(cfg.init_from), cfg.init_from)
        self.module = self.recognizer
        self.model = self.wrap(self.recognizer)
        self.optimizers = {"finetune": self._adamw(cfg.optim)}
        if self.pretrain_steps:
            self.optimizers["pretrain"] = self._adamw(cfg.pretrain_optim)
        self._perm: tuple[tuple[str, int], torch.Tensor] | None = None

    def fill_model_config(self, wanted: RecognizerConfig) -> RecognizerConfig:
        cfg, data = self.cfg, self.data
        fill: dict[str, Any] = dict(num_classes=len(data.class_names), class_names=data.class_names,
                                    frames=data.frames, size=data.size)
        fill["max_grid"] = wanted.grid_of(data.frames, data.size, data.size)
        if self.tokenizer is not None:
            tc, sc = self.tokenizer.temporal_compression, self.tokenizer.spatial_compression
            if (wanted.patch, wanted.tubelet) != (sc, tc):
                raise VistokError(f"model.patch={wanted.patch} and model.tubelet={wanted.tubelet} must equal the "
                                  f"tokenizer's factors ({sc} in space, {tc} in time) so patches and tokens align")
            fill.update(vocab_size=int(self.tokenizer.vocab_size), tokenizer_id=data.tokenizer_id)
            if data.tokens is not None and tuple(data.tokens.shape[1:]) != fill["max_grid"]:
                raise VistokError(f"token grid {tuple(data.tokens.shape[1:])} != patch grid {fill['max_grid']}")
        return wanted.replace(**fill)

    def _adamw(self, o) -> torch.optim.Optimizer:
        decay = [p for p in self.recognizer.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.recognizer.parameters() if p.ndim < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                  {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=o.betas)

    # -- phases -------------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        return self.pretrain_steps + self.cfg.steps

    @property
    def phase(self) -> str:
        return "pretrain" if self.step < self.pretrain_steps else "finetune"

    def lr(self) -> float:
        if self.phase == "pretrain":
            return lr_at(self.step, self.cfg.pretrain_optim, self.pretrain_steps)
        return lr_at(self.step - self.pretrain_steps, self.cfg.optim, self.cfg.steps)

    @property
    def picture_every(self) -> int:
        return self.cfg.picture_every

    # -- data ---------------------------------------------------------------------------------------

    def batch(self, step: int) -> tuple[str, torch.Tensor]:
        """The phase and this rank's item indices at global step ``step``."""
        phase = "pretrain" if step < self.pretrain_steps else "finetune"
        pool = torch.arange(len(self.data)) if phase == "pretrain" else self.labelled
        local = step if phase == "pretrain" else step - self.pretrain_steps
        b, world = self.cfg.batch_size, self.info.world_size
        per_epoch = len(pool) // (b * world)
        epoch, k = divmod(local, per_epoch)
        key = (phase, epoch)
        if self._perm is None or self._perm[0] != key:
            g = torch.Generator().manual_seed(derive_seed(self.cfg.seed, 3, int(phase == "pretrain"), epoch))
            self._perm = (key, pool[torch.randperm(len(pool), generator=g)])
        start = (k * world + self.info.rank) * b
        return phase, self._perm[1][start : start + b]

    def next_batch(self) -> tuple[str, torch.Tensor]:
        return self.batch(self.step)

    # -- one step -----------------------------------------------------------------------------------

    def train_step(self, batch: tuple[str, torch.Tensor]) -> dict[str, float]:
        phase, items = batch
        if phase == "finetune" and self.step == self.pretrain_steps and self.pretrain_steps:
            encoder = self.whole_model(ema=False)  # every rank: under FSDP2 this gathers the shards
            if self.info.is_main:
                encoder.save_pretrained(self.out / PRETRAINED_DIR)  # the encoder as pretraining left it
        cfg, device = self.cfg, self.info.device
        opt = self.optimizers[phase]
        lr = self.lr()
        self.set_lr(opt, lr)
        self.model.train()
        video = self.data.video(items).to(device)
        tokens = self.data.tokens[items].to(device) if self.data.tokens is not None else None
        labels = self.data.labels[items].to(device)
        n = cfg.optim.accumulate
        gen = torch.Generator(device=device).manual_seed(step_seed(cfg.seed, self.step, self.info.rank))
        inputs = tokens if self.model_config.inputs == "tokens" else video
        chunks = zip(video.chunk(n), inputs.chunk(n), tokens.chunk(n) if tokens is not None else [None] * n, labels.chunk(n))

        def loss_fn(chunk):
            v, x, t, y = chunk
            if phase == "pretrain":
                return self.model(v, pretrain=True, tokens=t, generator=gen)
            logits = self.model(x)
            loss = F.cross_entropy(logits.float(), y)
            return loss, {"loss": float(loss.detach()), "accuracy": float((logits.argmax(-1) == y).float().mean())}

        opt.zero_grad(set_to_none=True)
        stats = self.accumulate(self.model, chunks, loss_fn)
        stats["grad_norm"] = self.apply_gradients(opt, self.recognizer.parameters())
        stats["lr"] = lr
        stats["pretraining"] = float(phase == "pretrain")
        return stats

    def save_pictures(self, model: nn.Module) -> None:
        rows = read_metrics(self.out / "metrics.jsonl")
        keys = [k for k in ("loss", "accuracy", "mse", "lr") if any(k in r for r in rows)]
        save_loss_plot(self.out / "losses.png", rows, keys=keys)

    def export(self) -> Path:
        d = super().export()
        if self.info.is_main:
            counts = {"parameters": self.recognizer.num_parameters(),
                      "encoder_parameters": self.recognizer.num_parameters(encoder_only=True),
                      "train_items": len(self.data), "labelled_items": len(self.labelled)}
            atomic_write_text(self.out / "run_summary.json", json.dumps({**counts, "config": to_dict(self.cfg)}, indent=2) + "\n")
        return d


def train_classifier(cfg: ClassifierTrainConfig, out_dir: str | Path, *, resume: bool = False, quiet: bool = False,
                     stop_after: int | None = None, time_budget: float | None = None) -> LoopResult:
    """Train (or resume) a recognition model; see :class:`ClassifierTrainer`."""
    return ClassifierTrainer.run(cfg, out_dir, resume=resume, quiet=quiet, stop_after=stop_after, time_budget=time_budget)
