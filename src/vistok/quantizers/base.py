"""The one interface every quantizer (bottleneck) implements.

A quantizer takes ``latents (b, d, ...)`` -- any number of trailing axes, so one code path serves
images ``(b d h w)``, videos ``(b d t h w)`` and sequences ``(b d n)`` -- and returns a
:class:`QuantizerOutput` whose fields are the same in training and evaluation.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vistok.errors import VistokError


def autocast_off(device: torch.device):
    """A context where autocast is off on ``device``; nothing on device types without autocast
    (``meta``, which memory planning runs the networks on)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return nullcontext()


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    Attributes:
        codes: ``(b, d, ...)`` quantized latents with straight-through gradients to the input.
        indices: ``(b, ...)`` int64 token ids, or ``None`` for continuous bottlenecks (KL).
        loss: scalar, the weighted sum of the quantizer's auxiliary losses (add it to the
            reconstruction loss as is).
        commitment_loss: scalar, unweighted ``||z - sg(q)||^2`` (zero when not applicable).
        per_sample_entropy: scalar nats, mean over tokens of ``H(p(.|z))`` (LFQ; else ``None``).
        codebook_entropy: scalar nats, ``H(mean over tokens of p(.|z))`` (LFQ; else ``None``).
        stats: further detached per-quantizer statistics (e.g. ``perplexity``, ``kl``,
            ``usage``), floats as 0-dim tensors.
    """

    codes: Tensor
    indices: Tensor | None
    loss: Tensor
    commitment_loss: Tensor
    per_sample_entropy: Tensor | None = None
    codebook_entropy: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)


class Quantizer(nn.Module):
    """Base class: subclasses set ``dim``, ``code_dim`` and ``codebook_size``.

    ``dim`` is the channel count of the input latents (what :meth:`check_latents` expects),
    ``code_dim`` that of the output codes, and ``codebook_size`` the vocabulary (``None`` if
    continuous). ``code_dim == dim`` for every quantizer except :class:`~vistok.quantizers.KL`,
    whose input holds a mean and a log-variance (``dim == 2 * code_dim``).
    """

    dim: int
    code_dim: int
    codebook_size: int | None

    def check_latents(self, latents: Tensor) -> None:
        """Reject input that is not ``(b, dim, ...)`` floating point, with a message that says why."""
        if not isinstance(latents, Tensor):
            raise VistokError(f"{type(self).__name__} expects a torch.Tensor, got {type(latents).__name__}")
        if latents.ndim < 2:
            raise VistokError(
                f"{type(self).__name__} expects latents of shape (b, {self.dim}, ...), got {tuple(latents.shape)}"
            )
        if latents.shape[1] != self.dim:
            raise VistokError(
                f"{type(self).__name__} expects {self.dim} channels on axis 1 (layout b d ...), "
                f"got shape {tuple(latents.shape)}"
            )
        if not latents.is_floating_point():
            raise VistokError(f"{type(self).__name__} expects floating-point latents, got {latents.dtype}")

    def check_indices(self, indices: Tensor) -> None:
        if self.codebook_size is None:
            raise VistokError(f"{type(self).__name__} is continuous and has no indices")
        if not isinstance(indices, Tensor) or indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise VistokError(f"indices must be an integer tensor, got {getattr(indices, 'dtype', type(indices))}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise VistokError(
                f"indices must lie in [0, {self.codebook_size}), got range "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """``(b, ...)`` int64 indices -> ``(b, d, ...)`` codes (equal to ``forward(...).codes``)."""
        raise NotImplementedError(f"{type(self).__name__} has no discrete indices")

    def step_schedule(self, step: int) -> None:
        """Tell the quantizer the global training step (loss-weight annealing); default: nothing."""


def straight_through(latents: Tensor, quantized: Tensor) -> Tensor:
    """Forward value exactly ``quantized``, gradient of the identity w.r.t. ``latents``.

    Written ``q + (z - sg(z))`` rather than ``z + sg(q - z)``: the latter rounds, so its values can
    differ from ``q`` in the last bit and ``indices_to_codes`` would not reproduce them exactly.
    """
    return quantized + (latents - latents.detach())
