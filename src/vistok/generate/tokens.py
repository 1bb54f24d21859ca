"""Factorized token embeddings and output heads (MAGVIT-v2, section 3.1).

A language model over a ``2^K`` vocabulary sees each token as ``n`` sub-tokens of about ``K / n``
bits (:func:`vistok.quantizers.factorize.split_indices`, least significant bits first). Each
sub-token has its own embedding table (``2^(K/n)`` rows plus one mask row) and the token's input
vector is the sum of its sub-token embeddings; the output is one ``2^(K/n)``-way head per sub-token.
At 2^18 with two 9-bit sub-tokens that is 2 x 513 embedding rows and 2 x 512 logits instead of
262,144 of each.

With ``n = 1`` the token is its own single sub-token and the table and head have exactly
``vocab_size`` entries, so any vocabulary works (a VQ codebook of 8192, or 1000 codes): no logit
ever names an index outside the vocabulary. Splitting needs a power-of-two vocabulary; a
vocabulary of another size is refused for ``n > 1`` rather than sampled into invalid indices.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vistok.errors import VistokError
from vistok.quantizers.factorize import join_indices, split_indices

# Above this many entries a single table / head becomes the model's largest layer; ``auto``
# factorization then splits the bits into sub-tokens of at most 9 bits (MAGVIT-v2's 2 x 9 at 2^18).
AUTO_SINGLE_MAX = 2**14
AUTO_SUBTOKEN_BITS = 9


def auto_num_subtokens(vocab_size: int) -> int:
    """1 for vocabularies up to 2^14 (or not a power of two), else ``ceil(K / 9)`` sub-tokens."""
    if vocab_size <= AUTO_SINGLE_MAX or vocab_size & (vocab_size - 1):
        return 1
    bits = vocab_size.bit_length() - 1
    return -(-bits // AUTO_SUBTOKEN_BITS)


class TokenFactorization:
    """How token indices in ``[0, vocab_size)`` map to ``n`` sub-tokens and back.

    ``widths``: bits per sub-token (least significant first; the first ``K mod n`` get one extra),
    ``None`` when ``n == 1``. ``sizes``: the number of values of each sub-token.
    """

    def __init__(self, vocab_size: int, num_subtokens: int = 1):
        if not isinstance(vocab_size, int) or vocab_size < 2:
            raise VistokError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
        if not isinstance(num_subtokens, int) or num_subtokens < 1:
            raise VistokError(f"num_subtokens must be a positive integer, got {num_subtokens!r}")
        self.vocab_size = vocab_size
        self.num_subtokens = num_subtokens
        if num_subtokens == 1:
            self.widths: tuple[int, ...] | None = None
            self.sizes: tuple[int, ...] = (vocab_size,)
            return
        if vocab_size & (vocab_size - 1):
            raise VistokError(
                f"a vocabulary of {vocab_size} is not a power of two, so it cannot be split into "
                f"{num_subtokens} sub-tokens of whole bits; use num_subtokens=1"
            )
        bits = vocab_size.bit_length() - 1
        if num_subtokens > bits:
            raise VistokError(f"cannot split {bits}-bit tokens into {num_subtokens} sub-tokens")
        base, extra = divmod(bits, num_subtokens)
        self.widths = tuple(base + (1 if i < extra else 0) for i in range(num_subtokens))
        self.sizes = tuple(2**w for w in self.widths)

    def __repr__(self) -> str:
        return f"TokenFactorization(vocab_size={self.vocab_size}, sizes={self.sizes})"

    def check(self, indices: Tensor, what: str = "indices") -> None:
        """Raise :class:`VistokError` unless ``indices`` are integers in ``[0, vocab_size)``."""
        if not isinstance(indices, Tensor) or indices.is_floating_point() or indices.dtype == torch.bool:
            raise VistokError(f"{what} must be an integer tensor, got {getattr(indices, 'dtype', type(indices).__name__)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.vocab_size):
            raise VistokError(
                f"{what} must lie in [0, {self.vocab_size}), got [{int(indices.min())}, {int(indices.max())}] "
                "(tokens of another tokenizer?)"
            )

    def split(self, indices: Tensor) -> list[Tensor]:
        """``(...)`` token indices -> ``n`` int64 tensors ``(...)`` of sub-token values."""
        self.check(indices)
        if self.widths is None:
            return [indices.long()]
        return split_indices(indices, self.widths)

    def join(self, parts: list[Tensor]) -> Tensor:
        """Inverse of :meth:`split`."""
        if len(parts) != self.num_subtokens:
            raise VistokError(f"got {len(parts)} sub-token tensors for {self.num_subtokens} sub-tokens")
        if self.widths is None:
            return parts[0].long()
        return join_indices(parts, self.widths)


class FactorizedEmbedding(nn.Module):
    """Sum of one embedding per sub-token; masked positions use every table's extra last row."""

    def __init__(self, factorization: TokenFactorization, dim: int):
        super().__init__()
        self.factorization = factorization
        self.tables = nn.ModuleList(nn.Embedding(size + 1, dim) for size in factorization.sizes)

    def forward(self, indices: Tensor | list[Tensor], mask: Tensor | None = None) -> Tensor:
        """``indices (b n)`` tokens, or a list of ``n_sub`` sub-token tensors ``(b n)``; ``mask
        (b n)`` bool, True where the token is hidden (its index is then ignored) -> ``(b n d)``."""
        if not isinstance(indices, list) and mask is not None:
            indices = indices.masked_fill(mask, 0)  # whatever a masked position holds (-1 too) is unused
        parts = indices if isinstance(indices, list) else self.factorization.split(indices)
        out = None
        for table, size, part in zip(self.tables, self.factorization.sizes, parts):
            if mask is not None:
                part = part.masked_fill(mask, size)
            e = table(part)
            out = e if out is None else out + e
        return out


class FactorizedHead(nn.Module):
    """One linear classifier per sub-token, stored as one ``d -> sum(sizes)`` layer for speed."""

    def __init__(self, factorization: TokenFactorization, dim: int):
        super().__init__()
        self.sizes = list(factorization.sizes)
        self.proj = nn.Linear(dim, sum(self.sizes))

    def forward(self, h: Tensor) -> list[Tensor]:
        """``(b n d)`` -> one ``(b n size_i)`` logit tensor per sub-token."""
        return list(self.proj(h).split(self.sizes, dim=-1))


def factorized_cross_entropy(logits: list[Tensor], parts: list[Tensor], select: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy summed over sub-token heads, averaged over the selected positions.

    ``logits``: per sub-token ``(b n size_i)``; ``parts``: per sub-token targets ``(b n)``;
    ``select (b n)`` bool. Returns ``(loss, accuracy)``, accuracy being the fraction of selected
    positions whose every sub-token is predicted right (argmax), i.e. whole-token accuracy.
    """
    count = select.sum()
    if int(count) == 0:
        raise VistokError("no position selected for the loss")
    loss = logits[0].new_zeros(())
    correct = torch.ones_like(select)
    for lg, target in zip(logits, parts):
        lg_sel, t_sel = lg[select], target[select]
        loss = loss + nn.functional.cross_entropy(lg_sel.float(), t_sel, reduction="sum")
        correct = correct & (lg.argmax(-1) == target)
    return loss / count, (correct & select).sum().float() / count
