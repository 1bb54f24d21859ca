"""``QuantizerConfig``: the one typed description of a tokenizer's bottleneck, shared by every
tokenizer family, and :func:`build_quantizer`, which turns it into a module.

One section serves LFQ, VQ and KL; each kind reads the fields it needs (``bits`` for LFQ,
``codebook_size`` / ``code_dim`` for VQ, ``code_dim`` for KL). Fields that only shape the training
objective (loss weights, annealing, bit dropout) are listed in :data:`TRAINING_ONLY_FIELDS`: they
do not change the function a trained network computes, so a model's identity leaves them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from vistok.configuration import Config
from vistok.errors import VistokError
from vistok.quantizers.base import Quantizer
from vistok.quantizers.kl import KL
from vistok.limits import MAX_BITS
from vistok.quantizers.lfq import LFQ, EntropyWeightSchedule
from vistok.quantizers.vq import VQ

# Settings of the training objective only (see the module doc).
TRAINING_ONLY_FIELDS: tuple[str, ...] = (
    "commitment_weight", "entropy_weight", "entropy_anneal_factor", "entropy_anneal_steps",
    "diversity_weight", "bit_dropout", "kl_weight", "vq_dead_code_threshold",
)

# The flat names tokenizer configs used before the quantizer had its own section; still accepted
# when reading older ``config.json`` files and YAML (``model.bits=10`` = ``model.quantizer.bits=10``).
LEGACY_KEYS: dict[str, str] = {
    "bits": "bits", "entropy_temperature": "entropy_temperature", "commitment_weight": "commitment_weight",
    "entropy_weight": "entropy_weight", "bit_dropout": "bit_dropout", "entropy_anneal_factor": "entropy_anneal_factor",
    "entropy_anneal_steps": "entropy_anneal_steps", "diversity_weight": "diversity_weight",
    "codebook_size": "codebook_size", "latent_dim": "code_dim", "vq_ema": "vq_ema", "kl_weight": "kl_weight",
    "bottleneck": "kind",
}


@dataclass
class QuantizerConfig(Config):
    """The bottleneck: ``kind`` ``"lfq"`` (lookup-free, ``bits`` channels, 2^bits tokens; MAGVIT-v2),
    ``"vq"`` (l2-normalized codebook of ``codebook_size`` codes of ``code_dim`` channels with EMA
    updates; OmniTokenizer) or ``"kl"`` (Gaussian latent of ``code_dim`` channels, no tokens)."""

    kind: Literal["lfq", "vq", "kl"] = "lfq"
    bits: int = 18
    codebook_size: int = 8192
    code_dim: int = 8
    vq_ema: bool = True
    vq_dead_code_threshold: float = 0.0  # VQ training: restart codes whose EMA usage falls below this (0: off)
    entropy_temperature: float = 0.01
    commitment_weight: float = 0.25
    entropy_weight: float = 0.1
    entropy_anneal_factor: float = 3.0  # LFQ: the entropy weight starts at this multiple ...
    entropy_anneal_steps: int = 2000  # ... and reaches entropy_weight after this many steps
    diversity_weight: float = 1.0
    bit_dropout: float = 0.0  # LFQ training: chance of zeroing a random number of low bits (see LFQ)
    kl_weight: float = 1e-6

    family: ClassVar[str] = "quantizer"

    def __post_init__(self):
        if not 1 <= self.bits <= MAX_BITS:
            raise VistokError(f"bits must be in [1, {MAX_BITS}], got {self.bits}")
        if self.codebook_size < 2 or self.code_dim < 1:
            raise VistokError(f"codebook_size must be >= 2 and code_dim >= 1, got {self.codebook_size}, {self.code_dim}")
        if self.entropy_temperature <= 0:
            raise VistokError(f"entropy_temperature must be > 0, got {self.entropy_temperature}")
        for name in ("commitment_weight", "entropy_weight", "entropy_anneal_factor", "diversity_weight", "kl_weight",
                     "vq_dead_code_threshold"):
            if getattr(self, name) < 0:
                raise VistokError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.entropy_anneal_steps < 0:
            raise VistokError(f"entropy_anneal_steps must be >= 0, got {self.entropy_anneal_steps}")
        if not 0.0 <= self.bit_dropout < 1.0:
            raise VistokError(f"bit_dropout must be in [0, 1), got {self.bit_dropout}")

    @property
    def channels(self) -> int:
        """Channels of the latent the encoder must produce for this bottleneck."""
        return self.bits if self.kind == "lfq" else self.code_dim


def upgrade_quantizer_keys(data: dict) -> dict:
    """Move a tokenizer config's flat (pre-``quantizer`` section) keys into ``data["quantizer"]``."""
    legacy = {k: data.pop(k) for k in list(data) if k in LEGACY_KEYS}
    if legacy:
        section = data.get("quantizer") or {}
        if not isinstance(section, dict):
            raise VistokError(f"quantizer: expected a mapping, got {section!r}")
        data["quantizer"] = {**{LEGACY_KEYS[k]: v for k, v in legacy.items()}, **section}
    return data


def build_quantizer(cfg: QuantizerConfig) -> Quantizer:
    """The bottleneck module ``cfg`` describes."""
    if cfg.kind == "vq":
        return VQ(cfg.code_dim, cfg.codebook_size, l2_normalize=True, ema=cfg.vq_ema, commitment_weight=cfg.commitment_weight,
                  dead_code_threshold=cfg.vq_dead_code_threshold)
    if cfg.kind == "kl":
        return KL(cfg.code_dim, kl_weight=cfg.kl_weight)
    return LFQ(
        bits=cfg.bits,
        entropy_temperature=cfg.entropy_temperature,
        commitment_weight=cfg.commitment_weight,
        bit_dropout=cfg.bit_dropout,
        entropy_schedule=EntropyWeightSchedule(
            weight=cfg.entropy_weight, start_factor=cfg.entropy_anneal_factor, steps=cfg.entropy_anneal_steps
        ),
        diversity_weight=cfg.diversity_weight,
    )
