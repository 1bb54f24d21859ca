"""Lookup-free quantization (MAGVIT-v2, Yu et al. 2023, section 3.1), with exact entropy terms.

Each of the K latent channels is quantized to its sign, ``q_d = s * sign(z_d)`` with ``s`` the code
scale, and the token index is ``sum_d [z_d > 0] * 2^d`` (bit ``d`` of the index is channel ``d``,
``d = 0`` least significant). The vocabulary is ``2^K`` and there is no codebook to look up.

The entropy penalty uses the soft assignment ``p(c|z) ∝ exp(-||z - c||^2 / tau)`` over all ``2^K``
codes ``c ∈ {-s, +s}^K``. Because ``||z - c||^2 = ||z||^2 + K s^2 - 2 z·c``, that distribution
factorizes over bits, ``p(c_d = +s | z_d) = sigmoid(4 s z_d / tau)``, which gives both terms
exactly and cheaply:

* per-sample entropy ``H(p(.|z))`` is a sum of ``K`` binary entropies;
* the batch-mean distribution ``pbar = mean_n p(.|z_n)`` over all ``2^K`` codes is the matrix
  ``P_A^T P_B / N``, where ``P_A`` (``N x 2^{K_a}``) and ``P_B`` (``N x 2^{K_b}``) are each token's
  distribution over the low ``K_a`` and the high ``K_b`` bits. One matrix product gives the exact
  codebook entropy with ``O(N 2^{K/2} + 2^K)`` memory -- no ``N x 2^K`` matrix is ever built.

Under ``torch.distributed`` the ``2^K`` sums are all-reduced (differentiably) so the codebook
entropy is the global batch's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from vistok.errors import VistokError
from vistok.limits import MAX_BITS
from vistok.quantizers.base import Quantizer, QuantizerOutput, autocast_off, straight_through
from vistok.quantizers.distributed import all_reduce_sum, should_sync



@dataclass(frozen=True)
class EntropyWeightSchedule:
    """Entropy-penalty weight annealing.

    MAGVIT (v1 and v2) anneal the entropy penalty: the weight starts at ``start_factor * weight``
    and decays linearly to ``weight`` over ``steps`` training steps, then stays there. Strong early
    pressure spreads codebook usage while the encoder is still random; the smaller final weight
    lets reconstruction dominate. ``start_factor = 1`` disables annealing.
    """

    weight: float = 0.1
    start_factor: float = 3.0
    steps: int = 2000

    def __post_init__(self):
        if self.weight < 0 or self.start_factor < 0 or self.steps < 0:
            raise VistokError(f"EntropyWeightSchedule values must be non-negative, got {self}")

    def __call__(self, step: int) -> float:
        if self.steps == 0:
            return self.weight
        frac = min(max(step, 0) / self.steps, 1.0)
        return self.weight * (self.start_factor + (1.0 - self.start_factor) * frac)


def bit_table(bits: int, *, device=None, dtype=torch.float32) -> Tensor:
    """``(2^bits, bits)`` table whose row ``a`` holds the bits of ``a``, least significant first."""
    codes = torch.arange(2**bits, device=device)
    shifts = torch.arange(bits, device=device)
    return ((codes[:, None] >> shifts) & 1).to(dtype)


def binary_entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy (nats) of Bernoulli(sigmoid(logits)), stable for large |logits|."""
    p = torch.sigmoid(logits)
    # -log p = softplus(-l), -log(1-p) = softplus(l)
    return p * F.softplus(-logits) + (1 - p) * F.softplus(logits)


def group_distribution(logits: Tensor, table: Tensor) -> Tensor:
    """Each token's distribution over all joint settings of a group of bits.

    Args:
        logits: ``(n, k)`` logits of ``p(bit = 1)`` for ``k`` bits.
        table: ``(2^k, k)`` from :func:`bit_table`.
    Returns:
        ``(n, 2^k)``; row ``n`` sums to one.
    """
    log_p1 = -F.softplus(-logits)
    log_p0 = -F.softplus(logits)
    # log P[n, a] = sum_j bit_j(a) log p1[n, j] + (1 - bit_j(a)) log p0[n, j]   -- (n, 2^k)
    log_p = log_p1 @ table.T + log_p0 @ (1 - table).T
    # At tau = 0.01 most entries lie far below exp's underflow point: exp takes a slow path there
    # and subnormal results make the following matrix products ~100x slower. Clamping at half the
    # log of the smallest normal float keeps every entry and every pairwise product normal; the
    # mass this adds is at most 2^k sqrt(tiny) (5.5e-17 at k = 9 in float32), far below float
    # resolution of the entropy (bench/lfq.py: identical values, bit-identical gradients).
    floor = 0.5 * math.log(torch.finfo(log_p.dtype).tiny)
    return torch.exp(log_p.clamp_min(floor))


class LFQ(Quantizer):
    """Lookup-free quantizer with exact per-sample and codebook entropies.

    Args:
        bits: K, the number of latent channels; the vocabulary is ``2^K``.
        entropy_temperature: tau in ``p(c|z) ∝ exp(-||z - c||^2 / tau)``.
        commitment_weight: weight of ``||z - sg(q)||^2`` (paper: 0.25).
        entropy_weight: final weight of the entropy penalty (paper: 0.1); see ``entropy_schedule``.
        entropy_schedule: annealing of the entropy weight; default linear from 3x to 1x over 2000
            steps. Its ``weight`` overrides ``entropy_weight`` when given.
        diversity_weight: gamma in ``E[H(p(.|z))] - gamma * H(E[p(.|z)])`` (paper: 1).
        code_scale: magnitude ``s`` of the codes (``±s``).
        bit_dropout: training only, the probability that a sample's ``n`` least significant channels
            (``n`` uniform in ``1 .. K-1``) are replaced by the zero code, as the codec decodes the bits
            it dropped (``vistok compress --drop-bits n``); the decoder learns to use the coarse
            tokens and the channels become ordered, most significant first. 0 (default) disables it.
        sync_distributed: ``"auto"`` all-reduces codebook statistics in training when
            ``torch.distributed`` is initialized with more than one rank; ``True``/``False`` force it.
    """

    def __init__(
        self,
        bits: int,
        *,
        entropy_temperature: float = 0.01,
        commitment_weight: float = 0.25,
        entropy_weight: float = 0.1,
        entropy_schedule: EntropyWeightSchedule | None = None,
        diversity_weight: float = 1.0,
        code_scale: float = 1.0,
        bit_dropout: float = 0.0,
        sync_distributed: bool | str = "auto",
    ):
        super().__init__()
        if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= MAX_BITS:
            raise VistokError(f"LFQ bits must be an integer in [1, {MAX_BITS}], got {bits!r}")
        if entropy_temperature <= 0:
            raise VistokError(f"entropy_temperature must be > 0, got {entropy_temperature}")
        if code_scale <= 0:
            raise VistokError(f"code_scale must be > 0, got {code_scale}")
        if commitment_weight < 0 or entropy_weight < 0 or diversity_weight < 0:
            raise VistokError("LFQ loss weights must be non-negative")
        if not 0.0 <= bit_dropout < 1.0:
            raise VistokError(f"bit_dropout must be in [0, 1), got {bit_dropout}")
        if sync_distributed not in ("auto", True, False):
            raise VistokError(f"sync_distributed must be 'auto', True or False, got {sync_distributed!r}")
        self.dim = bits
        self.code_dim = bits
        self.bits = bits
        self.codebook_size = 2**bits
        self.entropy_temperature = float(entropy_temperature)
        self.commitment_weight = float(commitment_weight)
        self.entropy_schedule = entropy_schedule or EntropyWeightSchedule(weight=entropy_weight)
        self.diversity_weight = float(diversity_weight)
        self.code_scale = float(code_scale)
        self.bit_dropout = float(bit_dropout)
        self.sync_distributed = sync_distributed
        self.low_bits = bits // 2
        self.high_bits = bits - self.low_bits
        self.entropy_weight_now = self.entropy_schedule(0)
        self.register_buffer("_shifts", torch.arange(bits), persistent=False)
        self.register_buffer("_low_table", bit_table(self.low_bits), persistent=False)
        self.register_buffer("_high_table", bit_table(self.high_bits), persistent=False)

    def extra_repr(self) -> str:
        return (
            f"bits={self.bits}, vocab={self.codebook_size}, tau={self.entropy_temperature}, "
            f"commitment_weight={self.commitment_weight}, schedule={self.entropy_schedule}"
        )

    def step_schedule(self, step: int) -> None:
        self.entropy_weight_now = self.entropy_schedule(step)

    # -- token <-> code -------------------------------------------------------------------------

    def _channel_view(self, t: Tensor, ndim: int) -> Tensor:
        """Reshape a per-channel vector ``(K,)`` to broadcast against ``(b, K, ...)`` of ``ndim`` dims."""
        return t.view(1, -1, *([1] * (ndim - 2)))

    def quantize(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """``(b, K, ...)`` latents -> (codes ``(b, K, ...)`` with straight-through grads, indices ``(b, ...)``)."""
        self.check_latents(latents)
        positive = latents > 0
        q = torch.where(positive, self.code_scale, -self.code_scale).to(latents.dtype)
        codes = straight_through(latents, q)
        indices = (positive.long() << self._channel_view(self._shifts, latents.ndim)).sum(dim=1)
        return codes, indices

    def indices_to_codes(
        self, indices: Tensor, dtype: torch.dtype = torch.float32, *, kept_channels: Sequence[int] | None = None
    ) -> Tensor:
        """``(b, ...)`` integer indices -> ``(b, K, ...)`` codes ``±code_scale``.

        ``kept_channels``: when given, every other channel gets ``0`` -- the midpoint of the two
        codes it could have had, the decoder's least-committal input for a bit that is unknown
        (what the codec decodes for bits it did not store, and what ``bit_dropout`` trains for).
        """
        self.check_indices(indices)
        idx = indices.long().unsqueeze(1)
        channel = self._channel_view(self._shifts, idx.ndim)
        codes = (((idx >> channel) & 1).to(dtype) * 2 - 1) * self.code_scale
        if kept_channels is not None:
            kept = sorted(set(int(c) for c in kept_channels))
            if any(not 0 <= c < self.bits for c in kept):
                raise VistokError(f"kept_channels must lie in [0, {self.bits}), got {kept}")
            keep = torch.zeros(self.bits, dtype=dtype, device=codes.device)
            keep[kept] = 1
            codes = codes * self._channel_view(keep, codes.ndim)
        return codes

    def drop_low_bits(self, codes: Tensor, dropped: Tensor) -> Tensor:
        """Zero the ``dropped[i]`` least significant channels of sample ``i`` of ``codes (b, K, ...)``
        (the code the codec decodes for a bit it did not store)."""
        channel = self._channel_view(self._shifts, codes.ndim)
        keep = channel >= dropped.view(-1, *([1] * (codes.ndim - 1)))
        return codes * keep.to(codes.dtype)

    # -- entropy terms --------------------------------------------------------------------------

    def entropies(self, latents: Tensor, *, sync: bool = False) -> tuple[Tensor, Tensor]:
        """Exact (per-sample entropy, codebook entropy) in nats for ``(b, K, ...)`` latents.

        Computed in float32 (float64 if the input is float64) outside autocast.
        """
        dtype = torch.float64 if latents.dtype == torch.float64 else torch.float32
        with autocast_off(latents.device):
            flat = rearrange(latents.to(dtype), "b k ... -> (b ...) k")  # (n, K)
            logits = flat * (4.0 * self.code_scale / self.entropy_temperature)
            per_sample = binary_entropy_from_logits(logits).sum(dim=-1).mean()

            low = group_distribution(logits[:, : self.low_bits], self._low_table.to(dtype))  # (n, 2^Ka)
            high = group_distribution(logits[:, self.low_bits :], self._high_table.to(dtype))  # (n, 2^Kb)
            joint_sum = low.T @ high  # (2^Ka, 2^Kb): sum over tokens of p(code = a + b * 2^Ka)
            count = torch.tensor(float(flat.shape[0]), dtype=dtype, device=flat.device)
            if sync:
                joint_sum = all_reduce_sum(joint_sum)
                count = all_reduce_sum(count)
            mean_prob = joint_sum / count
            # Clamp inside the log only: exact where p > tiny, and a finite gradient where p underflowed.
            tiny = torch.finfo(dtype).tiny
            codebook = -(mean_prob * mean_prob.clamp_min(tiny).log()).sum()
        return per_sample, codebook

    # -- forward --------------------------------------------------------------------------------

    def forward(self, latents: Tensor) -> QuantizerOutput:
        """Quantize ``latents (b, K, ...)``; see :class:`QuantizerOutput` for the fields."""
        codes, indices = self.quantize(latents)
        sync = should_sync(self.sync_distributed, self.training)
        per_sample, codebook = self.entropies(latents, sync=sync)
        with autocast_off(latents.device):
            commitment = F.mse_loss(latents.float(), codes.detach().float())
            entropy_loss = per_sample - self.diversity_weight * codebook
            loss = self.commitment_weight * commitment + self.entropy_weight_now * entropy_loss.float()
        if self.training and self.bit_dropout > 0 and self.bits > 1:
            b = codes.shape[0]
            n = torch.randint(1, self.bits, (b,), device=codes.device)
            chosen = torch.rand(b, device=codes.device) < self.bit_dropout
            codes = self.drop_low_bits(codes, torch.where(chosen, n, torch.zeros_like(n)))
        with torch.no_grad():
            used = torch.unique(indices).numel()
            stats = {
                "entropy_loss": entropy_loss.detach(),
                "entropy_weight": torch.tensor(self.entropy_weight_now),
                "perplexity": codebook.detach().exp(),
                "batch_usage": torch.tensor(used / min(self.codebook_size, max(indices.numel(), 1))),
                "codes_used": torch.tensor(float(used)),
            }
        return QuantizerOutput(
            codes=codes,
            indices=indices,
            loss=loss,
            commitment_loss=commitment,
            per_sample_entropy=per_sample,
            codebook_entropy=codebook,
            stats=stats,
        )
