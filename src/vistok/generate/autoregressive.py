"""``AutoregressiveTokenModel``: a GPT-style causal transformer over the same tokens, the baseline
MAGVIT-v2 compares masked decoding with.

Tokens are predicted one at a time in raster order ``(t h w)``, with the same factorized
embeddings and heads and the same class token (and classifier-free guidance) as the masked model.
Input ``j`` is the class token (``j = 0``) or token ``j - 1``, plus the position embedding of token
``j`` -- the token predicted there. Giving each input the position of its *target* tells the
model which grid cell comes next, which the previous token's position alone does not when grids
of different widths share the position tables.

Sampling runs the transformer on one new token per step against a preallocated KV cache; frame
prediction prefills the class token and the given frames in one pass.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor

from vistok.generate.base import LM_KINDS, LMBatch, TokenLM, guide
from vistok.generate.sampling import sample_subtokens


class ARSample(NamedTuple):
    """``tokens (b t' h' w')``; ``logits``: the (guided) logits each generated token was drawn from,
    per sub-token ``(b, n_generated, size_i)``, when asked for (``keep_logits``), else ``None``."""

    tokens: Tensor
    logits: list[Tensor] | None


@LM_KINDS.register("ar")
class AutoregressiveTokenModel(TokenLM):
    kind = "ar"

    def _inputs(self, labels: Tensor, tokens: Tensor, pos: Tensor, start: int, end: int) -> Tensor:
        """Input vectors of sequence positions ``start .. end - 1`` ``(b, end - start, d)``;
        ``tokens (b, >= end - 1)`` flattened grid tokens, ``pos (n d)`` grid positions."""
        pieces = []
        if start == 0:
            pieces.append(self.class_embed(labels)[:, None])
        lo, hi = max(start, 1) - 1, end - 1
        if hi > lo:
            pieces.append(self.embed(tokens[:, lo:hi]))
        x = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=1)
        return x + pos[start:end]

    def forward(self, indices: Tensor, labels: Tensor) -> list[Tensor]:
        """``indices (b t h w)``, ``labels (b,)`` -> per sub-token logits ``(b, t h w, size_i)``;
        position ``j`` predicts token ``j`` from the class and tokens ``< j``."""
        grid = tuple(indices.shape[1:])
        flat = rearrange(indices, "b t h w -> b (t h w)")
        x = self._inputs(labels, flat, self.positions(grid), 0, flat.shape[1])
        return self.head(self.transformer(self.drop(x), causal=True))

    def training_batch(self, indices: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> LMBatch:
        """Next-token prediction on every position (given-frame prediction needs nothing extra:
        the first frames are a prefix of the raster order)."""
        self.check_indices(indices)
        b = indices.shape[0]
        flat = rearrange(indices, "b t h w -> b (t h w)")
        inputs = {"indices": indices, "labels": self.drop_labels(labels, b, generator)}
        return LMBatch(inputs=inputs, targets=self.factorization.split(flat), select=torch.ones_like(flat, dtype=torch.bool))

    @torch.no_grad()
    def sample(
        self,
        labels: Tensor | None = None,
        *,
        num_samples: int | None = None,
        grid: tuple[int, int, int] | None = None,
        given: Tensor | None = None,
        cfg_scale: float = 0.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        keep_logits: bool = False,
    ) -> ARSample:
        """Sample tokens one by one with a KV cache. Arguments as :meth:`MaskedTokenModel.generate`;
        with ``cfg_scale != 0`` the conditional and unconditional sequences run as one batch of
        ``2b`` with one cache."""
        device = self.class_embed.weight.device
        b, lab = self.batch_labels(labels, num_samples, device)
        self.check_cfg(cfg_scale, labels)
        t, h, w = grid = self.resolve_grid(grid)
        flat_given = self.check_given(given, b, grid)
        n, g = t * h * w, (0 if flat_given is None else flat_given.shape[1])
        guided = cfg_scale != 0
        all_labels = torch.cat([lab, torch.full_like(lab, self.null_class)]) if guided else lab
        parts = [torch.zeros(b, n, dtype=torch.long, device=device) for _ in self.factorization.sizes]
        context = torch.zeros(b, g, dtype=torch.long, device=device) if flat_given is None else flat_given.to(device)
        if g:
            for p, v in zip(parts, self.factorization.split(context)):
                p[:, :g] = v
        was_training = self.training
        self.eval()
        try:
            pos = self.positions(grid)
            cache = self.transformer.new_cache(len(all_labels), n, dtype=pos.dtype, device=device)
            ctx = context.repeat(2, 1) if guided else context
            h_last = self.transformer(self._inputs(all_labels, ctx, pos, 0, g + 1), causal=True, cache=cache)[:, -1:]
            logits = self.head(h_last)  # (B, 1, size_i)
            kept: list[list[Tensor]] = []
            for j in range(g, n):
                if guided:
                    logits = guide([x[:b] for x in logits], [x[b:] for x in logits], cfg_scale)
                if keep_logits:
                    kept.append(logits)
                new, _ = sample_subtokens(logits, temperature, generator)  # per sub-token (b, 1)
                for p, v in zip(parts, new):
                    p[:, j] = v[:, 0]
                if j == n - 1:
                    break
                if guided:
                    new = [v.repeat(2, 1) for v in new]
                x = self.embed(new) + pos[j + 1]
                logits = self.head(self.transformer(x, causal=True, cache=cache))
        finally:
            self.train(was_training)
        tokens = rearrange(self.factorization.join(parts), "b (t h w) -> b t h w", t=t, h=h)
        logits_out = [torch.cat(per, dim=1) for per in zip(*kept)] if keep_logits and kept else None
        return ARSample(tokens, logits_out)

    def generate(self, labels: Tensor | None = None, **kwargs) -> Tensor:
        """``(b t' h' w')`` sampled tokens (:meth:`sample` without the logits)."""
        return self.sample(labels, **kwargs).tokens
