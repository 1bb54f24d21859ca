"""``MaskedTokenModel``: a bidirectional transformer that predicts masked tokens (MaskGIT; the
generator of MAGVIT-v2, section 4).

Sequence: ``[class token] + t' h' w'`` grid tokens in raster order, each grid token the sum of its
factorized embedding (or the mask embedding) and its position. Training masks a schedule-drawn
number of tokens per sample and scores the prediction on the masked positions only, the
cross-entropy summed over the sub-token heads. Frame prediction: with probability
``frame_condition_prob`` a training sample keeps its first ``frame_condition_frames`` latent frames
unmasked as context, outside the loss; generation given those frames then matches training.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from vistok.generate.base import LM_KINDS, LMBatch, TokenLM, guide
from vistok.generate.sampling import maskgit_decode
from vistok.generate.schedule import num_masked_for_training


@LM_KINDS.register("mlm")
class MaskedTokenModel(TokenLM):
    kind = "mlm"

    def forward(self, indices: Tensor, mask: Tensor, labels: Tensor) -> list[Tensor]:
        """``indices (b t h w)`` tokens (ignored where masked), ``mask (b t h w)`` bool (True =
        masked), ``labels (b,)`` classes (``null_class`` for none) -> per sub-token logits
        ``(b, t h w, size_i)`` for every grid position."""
        grid = tuple(indices.shape[1:])
        x = self.embed(rearrange(indices, "b t h w -> b (t h w)"), rearrange(mask, "b t h w -> b (t h w)"))
        x = x + self.positions(grid)
        x = torch.cat([self.class_embed(labels)[:, None], x], dim=1)  # (b, 1 + n, d)
        h = self.transformer(self.drop(x), causal=False)
        return self.head(h[:, 1:])

    def training_batch(self, indices: Tensor, labels: Tensor | None, generator: torch.Generator | None) -> LMBatch:
        """Mask ``indices (b t h w)`` for one training step (every draw from ``generator``).

        Per sample: ``r ~ U(0, 1)``; with probability ``frame_condition_prob`` (and ``t' >
        frame_condition_frames``) the first frames are context; of the ``n`` other positions,
        ``num_masked_for_training(r, n)`` chosen uniformly are masked and scored.
        """
        self.check_indices(indices)
        b, t, h, w = indices.shape
        dev = indices.device
        cfg = self.config
        n = t * h * w
        context = torch.zeros(b, n, dtype=torch.bool, device=dev)
        c = cfg.frame_condition_frames
        if cfg.frame_condition_prob > 0 and t > c:
            cond = torch.rand(b, generator=generator, device=dev) < cfg.frame_condition_prob
            context[:, : c * h * w] = cond[:, None]
        maskable = n - context.sum(1)
        r = torch.rand(b, generator=generator, device=dev)
        k = num_masked_for_training(r, maskable, cfg.schedule)
        # k uniformly chosen maskable positions: the k smallest of uniform scores (context -> 2).
        scores = torch.rand(b, n, generator=generator, device=dev).masked_fill(context, 2.0)
        rank = scores.argsort(dim=1).argsort(dim=1)
        select = rank < k[:, None]
        flat = rearrange(indices, "b t h w -> b (t h w)")
        mask = rearrange(select, "b (t h w) -> b t h w", t=t, h=h)
        inputs = {"indices": indices, "mask": mask, "labels": self.drop_labels(labels, b, generator)}
        return LMBatch(inputs=inputs, targets=self.factorization.split(flat), select=select)

    @torch.no_grad()
    def generate(
        self,
        labels: Tensor | None = None,
        *,
        num_samples: int | None = None,
        grid: tuple[int, int, int] | None = None,
        given: Tensor | None = None,
        steps: int = 12,
        cfg_scale: float = 0.0,
        temperature: float = 1.0,
        choice_temperature: float = 4.5,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample ``(b t' h' w')`` tokens by MaskGIT parallel decoding.

        ``labels (b,)``: classes, or ``None`` with ``num_samples`` for the null class
        (unconditional). ``grid``: ``(t', h', w')``, default ``max_grid``. ``given``: tokens of the
        first ``c`` latent frames ``(b c h' w')``, kept unchanged (frame prediction). ``cfg_scale``
        ``w``: logits ``(1 + w) cond - w uncond`` (:func:`guide`), both from one batched pass.
        """
        device = self.class_embed.weight.device
        b, lab = self.batch_labels(labels, num_samples, device)
        self.check_cfg(cfg_scale, labels)
        t, h, w = grid = self.resolve_grid(grid)
        flat_given = self.check_given(given, b, grid)
        n = t * h * w
        tokens = torch.zeros(b, n, dtype=torch.long, device=device)
        known = torch.zeros(b, n, dtype=torch.bool, device=device)
        if flat_given is not None:
            g = flat_given.shape[1]
            tokens[:, :g] = flat_given.to(device)
            known[:, :g] = True
        null = torch.full_like(lab, self.null_class)
        was_training = self.training
        self.eval()

        def logits_fn(tok: Tensor, mask: Tensor) -> list[Tensor]:
            shape = lambda x: rearrange(x, "b (t h w) -> b t h w", t=t, h=h)  # noqa: E731
            if cfg_scale == 0:
                return self(shape(tok), shape(mask), lab)
            both = self(shape(tok).repeat(2, 1, 1, 1), shape(mask).repeat(2, 1, 1, 1), torch.cat([lab, null]))
            return guide([x[:b] for x in both], [x[b:] for x in both], cfg_scale)

        try:
            out = maskgit_decode(
                logits_fn, tokens, known, self.factorization, steps=steps, schedule=self.config.schedule,
                temperature=temperature, choice_temperature=choice_temperature, generator=generator,
            )
        finally:
            self.train(was_training)
        return rearrange(out, "b (t h w) -> b t h w", t=t, h=h)
