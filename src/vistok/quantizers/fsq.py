"""Finite scalar quantization (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple").

Each of the ``d = len(levels)`` latent channels is bounded and rounded on its own to one of ``L_i``
values; the token is the tuple of the ``d`` digits, read as a mixed-radix number. The implicit
codebook is the grid of all ``prod(L_i)`` tuples: no codebook to learn, no auxiliary loss, no
collapse (paper, section 3).

Channel ``i`` with ``L`` levels and half-width ``h = (L - 1) / 2``:

* bound: ``u = tanh(z)`` in ``(-1, 1)`` (paper section 3: ``f(z) = floor(L/2) tanh(z)``);
* round: digit ``k = round(h u + h)`` in ``{0, ..., L - 1}``; code ``q = k / h - 1``, with the
  straight-through estimator (paper section 3) so the gradient is that of ``u``;
* index: ``sum_i k_i * prod_{j < i} L_j`` (channel 0 least significant, as in LFQ).

The codes of a channel are the ``L`` points of a uniform grid on ``[-1, 1]`` for odd *and* even
``L``. The paper's reference code (appendix A.1) puts even-``L`` channels on the asymmetric grid
``{-L/2, ..., L/2 - 1} / (L/2)`` (e.g. ``L = 8``: ``-1, ..., 0.75``) and shifts the tanh input by a
constant to get there. The symmetric grid needs no shift, rounds exactly as the paper does for odd
``L``, uses the whole ``[-1, 1]`` range for even ``L``, and for ``L = 2`` is LFQ's sign quantizer
(``±1``). For even ``L``, ``z = 0`` sits on the boundary between the two middle codes;
``torch.round`` breaks that tie half-to-even.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vistok.errors import VistokError
from vistok.quantizers.base import Quantizer, QuantizerOutput, autocast_off, straight_through
from vistok.quantizers.vq import compute_dtype


class FSQ(Quantizer):
    """Finite scalar quantizer.

    Args:
        levels: number of values per channel, each ``>= 2``; ``dim == len(levels)`` and the
            vocabulary is ``prod(levels)``. Paper recommendations: ``(8, 5, 5, 5)`` for ``2^10``,
            ``(8, 8, 8, 6, 5)`` for ``2^14``, ``(8, 8, 8, 5, 5, 5)`` for ``2^16``.

    FSQ has no auxiliary loss: ``loss`` and ``commitment_loss`` are zero.
    """

    def __init__(self, levels: Sequence[int] = (8, 5, 5, 5)):
        super().__init__()
        if isinstance(levels, (str, bytes)) or not isinstance(levels, Sequence) or len(levels) == 0:
            raise VistokError(f"FSQ levels must be a non-empty sequence of integers >= 2, got {levels!r}")
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 2 for v in levels):
            raise VistokError(f"FSQ levels must be integers >= 2, got {list(levels)!r}")
        size = math.prod(levels)
        if size >= 2**62:
            raise VistokError(f"FSQ vocabulary prod(levels) = {size} does not fit in int64 indices")
        self.levels = tuple(int(v) for v in levels)
        self.dim = len(self.levels)
        self.code_dim = self.dim
        self.codebook_size = size
        basis = [math.prod(self.levels[:i]) for i in range(self.dim)]
        self.register_buffer("_levels", torch.tensor(self.levels, dtype=torch.long), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis, dtype=torch.long), persistent=False)
        half = torch.tensor([(v - 1) / 2 for v in self.levels], dtype=torch.float64)
        self.register_buffer("_half", half, persistent=False)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, vocab={self.codebook_size}"

    def _channel_view(self, t: Tensor, ndim: int) -> Tensor:
        """Reshape a per-channel vector ``(d,)`` to broadcast against ``(b, d, ...)`` of ``ndim`` dims."""
        return t.view(1, -1, *([1] * (ndim - 2)))

    def _digits_to_codes(self, digits: Tensor, half: Tensor) -> Tensor:
        # One expression shared by forward and indices_to_codes, so the two agree bit for bit.
        return digits / half - 1.0

    def quantize(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """``(b, d, ...)`` latents -> (codes ``(b, d, ...)`` in ``[-1, 1]``, indices ``(b, ...)``)."""
        self.check_latents(latents)
        dtype = compute_dtype(latents.dtype)
        with autocast_off(latents.device):
            half = self._channel_view(self._half.to(dtype), latents.ndim)
            bounded = torch.tanh(latents.to(dtype))
            # bounded * half + half lies in [0, L - 1] even where tanh saturates to exactly +-1.
            digits = torch.round(bounded * half + half)
            codes = straight_through(bounded, self._digits_to_codes(digits, half))
            indices = (digits.long() * self._channel_view(self._basis, latents.ndim)).sum(dim=1)
        return codes.to(latents.dtype), indices

    def indices_to_codes(self, indices: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(b, ...)`` integer indices -> ``(b, d, ...)`` codes, exactly ``forward(...).codes``."""
        self.check_indices(indices)
        idx = indices.long().unsqueeze(1)
        digits = (idx // self._channel_view(self._basis, idx.ndim)) % self._channel_view(self._levels, idx.ndim)
        cdtype = compute_dtype(dtype)
        half = self._channel_view(self._half.to(cdtype), idx.ndim)
        return self._digits_to_codes(digits.to(cdtype), half).to(dtype)

    def forward(self, latents: Tensor) -> QuantizerOutput:
        """Quantize ``latents (b, d, ...)``; see :class:`QuantizerOutput` for the fields."""
        codes, indices = self.quantize(latents)
        zero = torch.zeros((), dtype=compute_dtype(latents.dtype), device=latents.device)
        with torch.no_grad():
            _, counts = torch.unique(indices, return_counts=True)  # no (vocab,) array: vocab may be 2^16+
            probs = counts.to(zero.dtype) / max(indices.numel(), 1)
            used = float(counts.numel())
            stats = {
                "perplexity": torch.exp(-(probs * probs.log()).sum()),
                "batch_usage": torch.tensor(used / max(1, min(self.codebook_size, indices.numel()))),
                "codes_used": torch.tensor(used),
            }
        return QuantizerOutput(codes=codes, indices=indices, loss=zero, commitment_loss=zero, stats=stats)
