"""What the masked and the autoregressive token models share: factorized token embeddings and
heads, the class token, grid positions, the transformer, input checks, classifier-free guidance,
and ``save_pretrained`` / ``load_lm`` (:mod:`vistok.pretrained`: ``config.json`` +
``model.safetensors``, never pickle). The two kinds register in :data:`LM_KINDS`.

Class conditioning (both models): a class token ``class_embed[label]`` is prepended to the
sequence. The table has ``num_classes + 1`` rows; the last is the null class, used for
unconditional generation and, with probability ``class_dropout`` during training, in place of the
label so that one network gives both the conditional and the unconditional predictions
classifier-free guidance needs. An unconditional model (``num_classes = 0``) has the null row only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.generate.config import LMConfig
from vistok.generate.tokens import FactorizedEmbedding, FactorizedHead
from vistok.generate.transformer import GridPositions, Transformer
from vistok.pretrained import ModelRegistry, Pretrained, read_config_json, resolve_run_dir

MODEL_TYPE = "vistok-token-lm"

#: Token-LM classes by ``LMConfig.kind``; each registers with ``@LM_KINDS.register(kind)``.
LM_KINDS: ModelRegistry["TokenLM"] = ModelRegistry("token LM kind")


@dataclass
class LMBatch:
    """One training batch prepared by a model: ``model(**inputs)`` gives per-sub-token logits
    ``(b n size_i)``, scored against ``targets`` (per sub-token ``(b n)``) where ``select (b n)``."""

    inputs: dict[str, Tensor]
    targets: list[Tensor]
    select: Tensor


def guide(cond: list[Tensor], uncond: list[Tensor], scale: float) -> list[Tensor]:
    """Classifier-free guidance per sub-token head: ``(1 + w) * cond - w * uncond``.

    Applied to logits; since ``log_softmax`` only subtracts a per-row constant, this is the same
    distribution as guiding log-probabilities. ``w = 0`` is the conditional model exactly.
    """
    if scale == 0:
        return cond
    return [c + scale * (c - u) for c, u in zip(cond, uncond)]


class TokenLM(Pretrained, nn.Module):
    """Base of :class:`MaskedTokenModel` and :class:`AutoregressiveTokenModel`."""

    kind: ClassVar[str] = ""
    model_type: ClassVar[str] = MODEL_TYPE
    config_class: ClassVar[type] = LMConfig
    saved_what: ClassVar[str] = "token language model"

    def __init__(self, config: LMConfig):
        super().__init__()
        if config.kind != self.kind:
            raise VistokError(f"{type(self).__name__} needs kind={self.kind!r}, got {config.kind!r}")
        config.check_complete()
        self.config = config
        self.factorization = config.factorization()
        d = config.dim
        self.embed = FactorizedEmbedding(self.factorization, d)
        self.class_embed = nn.Embedding(config.num_classes + 1, d)
        self.positions = GridPositions(config.max_grid, d)
        self.drop = nn.Dropout(config.dropout)
        self.transformer = Transformer(dim=d, depth=config.depth, heads=config.heads,
                                       mlp_ratio=config.mlp_ratio, dropout=config.dropout)
        self.head = FactorizedHead(self.factorization, d)
        self.apply(_init_weights)

    # -- properties -------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    @property
    def max_grid(self) -> tuple[int, int, int]:
        return self.config.max_grid

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- checks -----------------------------------------------------------------------------------

    def check_indices(self, indices: Tensor, what: str = "indices") -> None:
        """Raise :class:`VistokError` unless ``indices`` is ``(b t' h' w')`` tokens the model covers."""
        if not isinstance(indices, Tensor) or indices.ndim != 4:
            shape = tuple(indices.shape) if isinstance(indices, Tensor) else type(indices).__name__
            raise VistokError(f"expected {what} of shape (b, t', h', w'); got {shape}")
        self.positions.check(tuple(indices.shape[1:]))
        self.factorization.check(indices, what)

    def check_labels(self, labels: Tensor | None, batch: int, device: torch.device) -> Tensor:
        """``(b,)`` class labels in ``[0, num_classes)``, or ``None`` for the null class."""
        if labels is None:
            return torch.full((batch,), self.null_class, dtype=torch.long, device=device)
        labels = torch.as_tensor(labels, device=device)
        if labels.ndim == 0:
            labels = labels.expand(batch)
        if labels.shape != (batch,) or labels.is_floating_point():
            raise VistokError(f"expected {batch} integer class labels, got {labels.dtype} of shape {tuple(labels.shape)}")
        if self.num_classes == 0:
            raise VistokError("this model is unconditional (num_classes = 0): pass no class labels")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise VistokError(f"class labels must lie in [0, {self.num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
        return labels.long()

    def batch_labels(self, labels, num_samples: int | None, device: torch.device) -> tuple[int, Tensor]:
        """Batch size and ``(b,)`` labels for generation: ``labels`` ``(b,)``, one class for
        ``num_samples`` samples, or ``None`` (the null class) for ``num_samples`` samples."""
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.ndim == 0:
                labels = labels.expand(num_samples if num_samples is not None else 1)
            elif num_samples is not None and labels.ndim == 1 and labels.shape[0] != num_samples:
                raise VistokError(f"got {labels.shape[0]} labels for num_samples={num_samples}")
            batch = labels.shape[0] if labels.ndim == 1 else -1
        else:
            batch = num_samples if num_samples is not None else -1
        if batch < 1:
            raise VistokError("pass class labels (b,) or num_samples >= 1")
        return batch, self.check_labels(labels, batch, device)

    def drop_labels(self, labels: Tensor | None, batch: int, generator: torch.Generator | None) -> Tensor:
        """Training labels with the null class swapped in with probability ``class_dropout``."""
        device = self.class_embed.weight.device
        labels = self.check_labels(labels, batch, device)
        if self.num_classes and self.config.class_dropout > 0:
            drop = torch.rand(batch, generator=generator, device=device) < self.config.class_dropout
            labels = labels.masked_fill(drop, self.null_class)
        return labels

    def resolve_grid(self, grid: tuple[int, int, int] | None) -> tuple[int, int, int]:
        grid = tuple(self.max_grid if grid is None else (int(g) for g in grid))
        self.positions.check(grid)
        return grid

    def check_given(self, given: Tensor | None, batch: int, grid: tuple[int, int, int]) -> Tensor | None:
        """Tokens of the first latent frames ``(b c h' w')`` (or ``(c h' w')`` for the whole batch),
        ``c < t'``; returned flattened to ``(b, c h' w')``."""
        if given is None:
            return None
        if not isinstance(given, Tensor) or given.ndim not in (3, 4):
            raise VistokError("given frames must be tokens of shape (b, c, h', w') or (c, h', w')")
        if given.ndim == 3:
            given = given.unsqueeze(0).expand(batch, *given.shape)
        b, c, h, w = given.shape
        if b != batch or (h, w) != grid[1:] or not 1 <= c < grid[0]:
            raise VistokError(
                f"given frames {tuple(given.shape)} do not fit: expected ({batch}, c, {grid[1]}, {grid[2]}) "
                f"with 1 <= c < {grid[0]} latent frames"
            )
        self.factorization.check(given, "given frame tokens")
        return given.reshape(b, c * h * w).long()

    def check_cfg(self, cfg_scale: float, labels: Tensor | None) -> None:
        if cfg_scale != 0 and (self.num_classes == 0 or labels is None):
            raise VistokError("classifier-free guidance (cfg_scale != 0) needs a class-conditional model and class labels")

    def training_batch(self, indices: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> LMBatch:
        raise NotImplementedError

    # -- persistence (save_pretrained / from_pretrained come from Pretrained) -------------------------

    def weights_metadata(self) -> dict[str, str]:
        return {"model_type": MODEL_TYPE, "kind": self.kind}

    @classmethod
    def config_from_meta(cls, meta: dict[str, Any], source: Path) -> LMConfig:
        if meta["model_type"] != MODEL_TYPE:
            hint = " (that is a tokenizer; pass the language model first)"
            raise VistokError(f"{source} holds a {meta['model_type']!r} model, not a token language model{hint}")
        return super().config_from_meta(meta, source)

    @classmethod
    def class_for(cls, meta: dict[str, Any], config: LMConfig, source: Path) -> type:
        return LM_KINDS.get(config.kind, where=str(source))


def _init_weights(module: nn.Module) -> None:
    # GPT-2 / BERT initialization: N(0, 0.02) weights, zero biases.
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def resolve_lm_dir(path: str | Path) -> Path:
    """A ``save_pretrained`` folder, or a training run whose ``model/`` holds one."""
    return resolve_run_dir(path, TokenLM.saved_what)


def read_lm_config(path: str | Path) -> LMConfig:
    d = resolve_lm_dir(path)
    return TokenLM.config_from_meta(read_config_json(d), d)


def build_lm(config: LMConfig) -> TokenLM:
    """A freshly initialized model of the class ``config.kind`` names (``"mlm"`` or ``"ar"``)."""
    return LM_KINDS.get(config.kind)(config)


def load_lm(path: str | Path, *, map_location: str = "cpu") -> TokenLM:
    """Rebuild a :class:`MaskedTokenModel` or :class:`AutoregressiveTokenModel` saved by
    ``save_pretrained`` (or a ``train-lm`` run folder) and load its weights, in eval mode."""
    return TokenLM.from_pretrained(path, map_location=map_location)
