"""``LMConfig``: the typed configuration of a token language model, and its named size presets.

The config is saved beside the weights (``config.json``) with what the model was trained on: the
model id of the tokenizer whose tokens it learned, the class names, and the token grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from vistok.configuration import Config
from vistok.errors import VistokError
from vistok.generate.schedule import check_schedule
from vistok.generate.tokens import TokenFactorization, auto_num_subtokens

KINDS = ("mlm", "ar")


@dataclass
class LMConfig(Config):
    """A masked (``kind="mlm"``, MaskGIT) or autoregressive (``kind="ar"``) token model.

    ``vocab_size``, ``num_classes`` and ``max_grid`` describe the data; the trainer fills them in
    from the token set when left at ``0`` / ``None`` / ``None``. ``num_subtokens``: how many
    sub-tokens a token is split into (0 = automatic: 1 up to 2^14 tokens, else sub-tokens of at
    most 9 bits, e.g. 2 x 9 at 2^18). ``num_classes = 0``: unconditional. ``max_grid``: the
    largest ``(t', h', w')`` grid the position tables cover, and the default sampling grid.
    ``frame_condition_prob``: share of training samples (MLM) whose first
    ``frame_condition_frames`` latent frames are given unmasked, for frame prediction.
    """

    kind: Literal["mlm", "ar"] = "mlm"
    vocab_size: int = 0
    num_subtokens: int = 0
    dim: int = 256
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    num_classes: int | None = None
    class_dropout: float = 0.1
    max_grid: tuple[int, int, int] | None = None
    schedule: str = "cosine"
    frame_condition_prob: float = 0.0
    frame_condition_frames: int = 1
    tokenizer_id: str | None = None
    class_names: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise VistokError(f"kind must be one of {KINDS}, got {self.kind!r}")
        check_schedule(self.schedule)
        for name in ("dim", "depth", "heads"):
            if getattr(self, name) < 1:
                raise VistokError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise VistokError(f"dim {self.dim} must be divisible by heads {self.heads}")
        if self.mlp_ratio <= 0:
            raise VistokError(f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        for name in ("dropout", "class_dropout", "frame_condition_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise VistokError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.frame_condition_frames < 1:
            raise VistokError(f"frame_condition_frames must be >= 1, got {self.frame_condition_frames}")
        if self.num_subtokens < 0:
            raise VistokError(f"num_subtokens must be >= 0 (0: automatic), got {self.num_subtokens}")
        if self.num_classes is not None and self.num_classes < 0:
            raise VistokError(f"num_classes must be >= 0 (0: unconditional), got {self.num_classes}")
        if self.max_grid is not None:
            if len(self.max_grid) != 3 or any(int(g) < 1 for g in self.max_grid):
                raise VistokError(f"max_grid must be three positive sizes (t', h', w'), got {self.max_grid}")
            self.max_grid = tuple(int(g) for g in self.max_grid)
        if self.class_names and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise VistokError(f"{len(self.class_names)} class names for num_classes={self.num_classes}")

    # -- derived ----------------------------------------------------------------------------------

    def check_complete(self) -> None:
        """Raise unless the data-dependent fields are set (they are once a trainer has run)."""
        missing = [n for n, bad in (("vocab_size", self.vocab_size < 2), ("num_classes", self.num_classes is None),
                                    ("max_grid", self.max_grid is None)) if bad]
        if missing:
            raise VistokError(f"LMConfig needs {', '.join(missing)} (the trainer takes them from the token set)")

    @property
    def subtokens(self) -> int:
        return self.num_subtokens or auto_num_subtokens(self.vocab_size)

    def factorization(self) -> TokenFactorization:
        return TokenFactorization(self.vocab_size, self.subtokens)

    @property
    def max_tokens(self) -> int:
        self.check_complete()
        t, h, w = self.max_grid
        return t * h * w

    family: ClassVar[str] = "LM"

    @classmethod
    def presets(cls) -> dict[str, dict]:
        return LM_PRESETS


# Model sizes by name. lm-tiny trains on 2 CPU cores (~3 M parameters in the transformer);
# lm-large is the size of MAGVIT-v2's masked LM (~307 M parameters: 24 layers, 1024 wide, 16
# heads, as BERT-large); lm-base is MaskGIT's transformer (24 layers, 768 wide, 16 heads).
LM_PRESETS: dict[str, dict[str, Any]] = {
    "lm-tiny": dict(dim=256, depth=4, heads=4, mlp_ratio=4.0, dropout=0.1),
    "lm-small": dict(dim=512, depth=8, heads=8, mlp_ratio=4.0, dropout=0.1),
    "lm-base": dict(dim=768, depth=24, heads=16, mlp_ratio=4.0, dropout=0.1),
    "lm-large": dict(dim=1024, depth=24, heads=16, mlp_ratio=4.0, dropout=0.1),
}


def lm_config(preset: str = "lm-tiny", *, prefix: str = "", **overrides: Any) -> LMConfig:
    """``LMConfig`` of a named size preset with field overrides, e.g.
    ``lm_config("lm-tiny", vocab_size=1024, num_classes=10, max_grid=(1, 8, 8))``."""
    return LMConfig.preset(preset, overrides, prefix=prefix)
