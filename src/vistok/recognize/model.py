"""The recognition model: one transformer encoder over pixels or tokens, a classification head, and
the masked-modelling heads of its pretraining.

**Pixels.** A clip ``(b c t h w)`` is cut as the causal tokenizers cut it: the first frame alone
into ``patch x patch`` patches, every later ``tubelet`` frames into ``tubelet x patch x patch``
tubelets, so a 17-frame 128 px clip gives the same ``(5, 16, 16)`` grid as MAGVIT-v2's tokens.
Each kind of patch has its own linear embedding. **Tokens.** ``(b t' h' w')`` indices are embedded
as the sum of their sub-token embeddings (:class:`~vistok.generate.tokens.FactorizedEmbedding`,
as in the token LMs). Learned per-axis positions are added, the transformer runs bidirectionally,
and the mean of its outputs goes through a linear layer to the class logits.

**Masked pretraining** (pixel inputs). A fixed share of each item's patches is replaced by a
learned mask vector (SimMIM's form: the encoder sees the whole grid, so pretraining and fine-tuning
see the same sequence). With ``pretrain="tokens"`` a factorized head predicts the tokenizer's token
of each masked patch (BEVT, MAGVIT-v2 section 4.4); with ``pretrain="pixels"`` a linear head
regresses the patch's pixels, normalized per patch (MAE's target). Losses count masked positions only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from einops import rearrange
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.generate.tokens import FactorizedEmbedding, FactorizedHead, factorized_cross_entropy
from vistok.generate.transformer import GridPositions, Transformer
from vistok.pretrained import Pretrained
from vistok.recognize.config import RecognizerConfig

MODEL_TYPE = "vistok-recognizer"


class Recognizer(Pretrained, nn.Module):
    """See the module doc. ``forward(x) -> (b classes)`` logits, ``x`` a clip batch in [-1, 1]
    (pixel inputs) or token indices (token inputs)."""

    model_type: ClassVar[str] = MODEL_TYPE
    # the class head idles in pretraining and the pretraining heads in fine-tuning
    ddp_find_unused_parameters: ClassVar[bool] = True
    config_class: ClassVar[type] = RecognizerConfig
    saved_what: ClassVar[str] = "recognition model"

    def __init__(self, config: RecognizerConfig):
        super().__init__()
        config.check_complete()
        self.config = config
        d, c, p, k = config.dim, config.channels, config.patch, config.tubelet
        self.factorization = config.factorization() if config.needs_tokens else None
        if config.inputs == "pixels":
            self.embed_first = nn.Linear(c * p * p, d)
            self.embed_rest = nn.Linear(c * k * p * p, d) if config.max_grid[0] > 1 else None
        else:
            self.token_embed = FactorizedEmbedding(self.factorization, d)
        self.positions = GridPositions(config.max_grid, d)
        self.drop = nn.Dropout(config.dropout)
        self.transformer = Transformer(dim=d, depth=config.depth, heads=config.heads,
                                       mlp_ratio=config.mlp_ratio, dropout=config.dropout)
        self.head = nn.Linear(d, config.num_classes)
        if config.pretrain != "none":
            self.mask_token = nn.Parameter(torch.zeros(d))
        if config.pretrain == "tokens":
            self.token_head = FactorizedHead(self.factorization, d)
        elif config.pretrain == "pixels":
            self.pixel_head_first = nn.Linear(d, c * p * p)
            self.pixel_head_rest = nn.Linear(d, c * k * p * p) if config.max_grid[0] > 1 else None
        self.apply(_init_weights)
        if config.pretrain != "none":
            nn.init.normal_(self.mask_token, std=0.02)

    # -- geometry -----------------------------------------------------------------------------------

    def grid_of(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        return self.config.grid_of(frames, height, width)

    def patchify(self, video: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(b c t h w)`` -> first-frame patches ``(b h'w' c p p)`` and later tubelets
        ``(b (t'-1)h'w' c k p p)`` (``None`` for single frames), flattened, in raster order."""
        c = self.config
        if video.ndim != 5 or video.shape[1] != c.channels:
            raise VistokError(f"expected clips of shape (b, {c.channels}, t, h, w); got {tuple(video.shape)}")
        self.grid_of(*video.shape[2:])
        first = rearrange(video[:, :, :1], "b c 1 (h p) (w q) -> b (h w) (c p q)", p=c.patch, q=c.patch)
        if video.shape[2] == 1:
            return first, None
        rest = rearrange(video[:, :, 1:], "b c (t k) (h p) (w q) -> b (t h w) (c k p q)", k=c.tubelet, p=c.patch, q=c.patch)
        return first, rest

    # -- the encoder --------------------------------------------------------------------------------

    def embed(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, tuple[int, int, int]]:
        """Input embeddings ``(b n d)`` and the grid; ``mask (b n)`` True replaces a position by the
        mask vector (pretraining)."""
        if self.config.inputs == "tokens":
            if x.ndim != 4 or x.is_floating_point():
                raise VistokError(f"this model reads token grids (b, t', h', w') of integers; got {x.dtype} {tuple(x.shape)}")
            grid = tuple(int(g) for g in x.shape[1:])
            h = self.token_embed(rearrange(x, "b t h w -> b (t h w)"))
        else:
            first, rest = self.patchify(x)
            grid = self.grid_of(*x.shape[2:])
            if rest is not None and self.embed_rest is None:
                raise VistokError(f"this model was built for single frames; got clips of {x.shape[2]} frames")
            h = self.embed_first(first)
            if rest is not None:
                h = torch.cat([h, self.embed_rest(rest)], dim=1)
        if mask is not None:
            h = torch.where(mask[..., None], self.mask_token.to(h.dtype), h)
        return h + self.positions(grid).to(h.dtype), grid

    def features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(b n d)`` encoder outputs."""
        h, _ = self.embed(x, mask)
        return self.transformer(self.drop(h))

    def forward(self, x: Tensor, *, pretrain: bool = False, tokens: Tensor | None = None,
                generator: torch.Generator | None = None):
        """``(b classes)`` logits; with ``pretrain=True`` the masked-modelling ``(loss, stats)`` of
        the clips ``x`` (and their ``tokens`` for token targets) instead -- one forward for both, so
        a DDP wrapper sees either."""
        if pretrain:
            return self.pretrain_loss(x, tokens, generator)
        return self.head(self.features(x).mean(dim=1))

    # -- masked pretraining -------------------------------------------------------------------------

    def random_mask(self, batch: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``(b n)`` bool: exactly ``round(mask_ratio * n)`` (at least 1) positions per item."""
        count = min(n, max(1, round(self.config.mask_ratio * n)))
        noise = torch.rand(batch, n, generator=generator, device=device)
        ranks = noise.argsort(dim=1).argsort(dim=1)
        return ranks < count

    def pretrain_loss(self, video: Tensor, tokens: Tensor | None, generator: torch.Generator | None) -> tuple[Tensor, dict]:
        """The masked-modelling loss of a batch and its statistics (``accuracy`` of the token
        predictions, or the pixel regression's ``mse``)."""
        kind = self.config.pretrain
        if kind == "none":
            raise VistokError("this model was built without a pretraining head (pretrain=none)")
        first, rest = self.patchify(video)
        b, n = video.shape[0], first.shape[1] + (rest.shape[1] if rest is not None else 0)
        mask = self.random_mask(b, n, generator, video.device)
        out = self.features(video, mask)
        if kind == "tokens":
            if tokens is None:
                raise VistokError("token-target pretraining needs the tokenizer's tokens of the batch")
            targets = rearrange(tokens, "b t h w -> b (t h w)")
            if targets.shape[1] != n:
                raise VistokError(f"the tokens' grid {tuple(tokens.shape[1:])} does not match the clips' {n} patches")
            parts = self.factorization.split(targets)
            loss, accuracy = factorized_cross_entropy(self.token_head(out), parts, mask)
            return loss, {"loss": float(loss.detach()), "accuracy": float(accuracy)}
        n_first = first.shape[1]
        errors = [_normalized_mse(self.pixel_head_first(out[:, :n_first]), first)]
        if rest is not None:
            errors.append(_normalized_mse(self.pixel_head_rest(out[:, n_first:]), rest))
        per_position = torch.cat(errors, dim=1)
        loss = (per_position * mask).sum() / mask.sum()
        return loss, {"loss": float(loss.detach()), "mse": float(loss.detach())}

    # -- bookkeeping --------------------------------------------------------------------------------

    def encoder_state(self) -> dict[str, Tensor]:
        """The weights a fine-tuning run starts from: everything but the class head and the
        pretraining heads."""
        skip = ("head.", "token_head.", "pixel_head_first.", "pixel_head_rest.", "mask_token")
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def load_encoder(self, source: "Recognizer", where: str) -> None:
        """Copy ``source``'s encoder into this model (same input kind, width, depth and grid)."""
        mine, theirs = self.encoder_state(), source.encoder_state()
        if mine.keys() != theirs.keys():
            raise VistokError(f"{where}: its encoder has other layers ({sorted(set(mine) ^ set(theirs))[:4]} ...)")
        bad = [k for k in mine if mine[k].shape != theirs[k].shape]
        if bad:
            raise VistokError(f"{where}: its encoder's shapes differ from this run's ({bad[:3]} ...); use the same "
                              "model preset, size and frames")
        self.load_state_dict(theirs, strict=False)

    def num_parameters(self, *, encoder_only: bool = False) -> int:
        if encoder_only:
            return sum(v.numel() for v in self.encoder_state().values())
        return sum(p.numel() for p in self.parameters())

    def weights_metadata(self) -> dict[str, str]:
        return {"model_type": MODEL_TYPE}

    @classmethod
    def config_from_meta(cls, meta: dict[str, Any], source: Path) -> RecognizerConfig:
        if meta.get("model_type") != MODEL_TYPE:
            raise VistokError(f"{source} holds a {meta.get('model_type')!r} model, not a recognition model "
                              "(one written by `vistok train-classifier`)")
        return super().config_from_meta(meta, source)


def _normalized_mse(pred: Tensor, target: Tensor) -> Tensor:
    """``(b n)`` mean squared error against each patch normalized to zero mean, unit variance."""
    target = target.float()
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    target = (target - mean) / (var + 1e-6).sqrt()
    return (pred.float() - target).pow(2).mean(-1)


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def load_recognizer(path: str | Path, *, map_location: str = "cpu") -> Recognizer:
    """A model saved by ``save_pretrained`` (or a ``train-classifier`` run folder), in eval mode."""
    return Recognizer.from_pretrained(path, map_location=map_location)
