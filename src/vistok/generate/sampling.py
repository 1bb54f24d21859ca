"""Sampling tokens from per-sub-token logits, and MaskGIT's parallel iterative decoding.

**Sub-tokens.** The factorized heads predict each sub-token from the shared context, so given the
context they are conditionally independent: we sample every sub-token from its own head, then join
them into the token. A token's log-probability -- MaskGIT's confidence -- is the sum of its
sub-tokens' log-probabilities (the log of their product), taken from the model's (guided)
distribution before temperature, so that greedy decoding (``temperature = 0``) still ranks
positions by the model's belief.

**Parallel decoding** (MaskGIT, Algorithm 1 / section 3.2). Start with every generated position
masked (given tokens, e.g. conditioning frames, are known and never change). At step ``s`` of
``S``: predict all masked positions at once, sample a token for each, score it by its confidence
plus Gumbel noise scaled by a choice temperature that anneals linearly to 0 over the steps, keep
the most confident and re-mask the others so that ``floor(mask_ratio((s + 1) / S) * n)`` stay
masked (:mod:`vistok.generate.schedule`); at least one position is revealed per step, all after the
last. Revealed tokens are final. Every random draw comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from vistok.errors import VistokError
from vistok.generate.schedule import num_masked_after_step
from vistok.generate.tokens import TokenFactorization

# (tokens (b n) int64, mask (b n) bool: True = still masked) -> per-sub-token logits (b n size_i)
LogitsFn = Callable[[Tensor, Tensor], list[Tensor]]


def gumbel_noise(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Standard Gumbel samples ``-log(-log(u))``, ``u ~ U(0, 1)`` drawn from ``generator``."""
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u.clamp(min=1e-20, max=1.0 - 1e-7)))


def sample_subtokens(logits: list[Tensor], temperature: float, generator: torch.Generator | None) -> tuple[list[Tensor], Tensor]:
    """Sample each sub-token independently.

    ``logits``: per sub-token ``(b n size_i)``. ``temperature``: 0 is greedy (argmax); otherwise each
    sub-token is drawn from ``softmax(logits / temperature)`` (by the Gumbel-max trick, so the
    draw comes from ``generator``). Returns the sub-token values (per sub-token ``(b n)`` int64)
    and the tokens' log-probability ``(b n)``: the sum over sub-tokens of ``log_softmax(logits)``.
    """
    if temperature < 0:
        raise VistokError(f"temperature must be >= 0, got {temperature}")
    parts, logp = [], None
    for lg in logits:
        lp = torch.log_softmax(lg.float(), dim=-1)
        if temperature == 0:
            choice = lp.argmax(-1)
        else:
            choice = (lp / temperature + gumbel_noise(lp.shape, generator, lp.device)).argmax(-1)
        part_lp = lp.gather(-1, choice.unsqueeze(-1)).squeeze(-1)
        logp = part_lp if logp is None else logp + part_lp
        parts.append(choice)
    return parts, logp


def maskgit_decode(
    logits_fn: LogitsFn,
    tokens: Tensor,
    known: Tensor,
    factorization: TokenFactorization,
    *,
    steps: int = 12,
    schedule: str = "cosine",
    temperature: float = 1.0,
    choice_temperature: float = 4.5,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Fill the unknown positions of ``tokens (b n)`` by parallel iterative decoding.

    ``known (b n)`` bool marks given tokens (kept as they are); the values of ``tokens`` elsewhere
    are ignored. ``choice_temperature``: scale of the Gumbel noise added to the confidences when
    choosing what to keep (MaskGIT's default 4.5), annealed by ``1 - (s + 1) / S``. Returns
    ``(b n)`` int64 tokens in ``[0, vocab_size)``.
    """
    if not 1 <= steps <= 1024:
        raise VistokError(f"steps must be in [1, 1024], got {steps}")
    if choice_temperature < 0:
        raise VistokError(f"choice_temperature must be >= 0, got {choice_temperature}")
    tokens = tokens.long().masked_fill(~known, 0)
    mask = ~known
    total = mask.sum(1)  # generated positions per sample
    for s in range(steps):
        remaining = mask.sum(1)
        if int(remaining.max()) == 0:
            break
        parts, logp = sample_subtokens(logits_fn(tokens, mask), temperature, generator)
        sampled = torch.where(mask, factorization.join(parts), tokens)
        keep_masked = torch.minimum(num_masked_after_step(s, steps, total, schedule), (remaining - 1).clamp_min(0))
        anneal = choice_temperature * (1.0 - (s + 1) / steps)
        confidence = logp
        if anneal > 0:
            confidence = confidence + anneal * gumbel_noise(tuple(logp.shape), generator, logp.device)
        confidence = confidence.masked_fill(~mask, float("inf"))  # known tokens are never re-masked
        rank = confidence.argsort(dim=1, stable=True).argsort(dim=1, stable=True)
        mask = rank < keep_masked[:, None]
        tokens = torch.where(mask, tokens, sampled)
    if bool(mask.any()):  # fewer steps than needed is impossible: the last step reveals all
        raise AssertionError("parallel decoding left masked tokens")
    return tokens
