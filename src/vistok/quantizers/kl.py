"""Gaussian (KL) bottleneck: the continuous latent of a variational autoencoder.

OmniTokenizer's continuous variant (and latent diffusion's "KL-f8" autoencoder, Rombach et al. 2022,
section 3) replace the quantizer by a diagonal Gaussian posterior ``q(z|x) = N(mean, exp(logvar))``
regularized towards ``N(0, I)`` by a small KL term (Kingma & Welling 2014).

Layout: the encoder emits ``2 * code_dim`` channels, ``latents (b, 2*code_dim, ...)``; the first
``code_dim`` are the mean and the last ``code_dim`` the log-variance. So ``KL.dim`` (what
:meth:`Quantizer.check_latents` expects, like every quantizer's ``dim``) is the *input* channel
count ``2 * code_dim``, and ``codes`` are ``(b, code_dim, ...)``. There are no indices.

The log-variance is clamped to ``logvar_range`` (default ``[-30, 20]``, as latent diffusion does)
so ``exp(logvar)`` can neither underflow to a zero standard deviation nor overflow early in
training.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vistok.errors import VistokError
from vistok.quantizers.base import Quantizer, QuantizerOutput, autocast_off
from vistok.quantizers.vq import compute_dtype


class KL(Quantizer):
    """Diagonal-Gaussian bottleneck.

    Args:
        dim: channels of the codes (``code_dim``); the input has ``2 * dim`` channels
            (mean, then log-variance).
        kl_weight: weight of ``KL(q(z|x) || N(0, I))``. The KL is the *mean over elements*
            (batch, channels and positions), so it does not change with the latent size; latent
            diffusion instead sums over the elements of a sample and averages over the batch, so
            its weight corresponds to ``kl_weight / elements_per_sample`` here.
        sample_posterior: in training, return a sample ``mean + std * eps`` (reparameterization
            trick, Kingma & Welling 2014, section 2.4) rather than the mean. In evaluation the
            codes are always the mean, so encoding is deterministic.
        logvar_range: ``(low, high)`` clamp of the log-variance.

    ``indices`` is ``None`` and :meth:`indices_to_codes` raises: the bottleneck is continuous.
    """

    def __init__(
        self,
        dim: int,
        *,
        kl_weight: float = 1e-6,
        sample_posterior: bool = True,
        logvar_range: tuple[float, float] = (-30.0, 20.0),
    ):
        super().__init__()
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise VistokError(f"KL dim (code channels) must be a positive integer, got {dim!r}")
        if kl_weight < 0:
            raise VistokError(f"kl_weight must be non-negative, got {kl_weight}")
        try:
            low, high = (float(v) for v in logvar_range)
        except (TypeError, ValueError):
            raise VistokError(f"logvar_range must be a pair (low, high), got {logvar_range!r}") from None
        if not low < high:
            raise VistokError(f"logvar_range must have low < high, got {logvar_range!r}")
        self.dim = 2 * dim  # input channels: mean and log-variance
        self.code_dim = dim
        self.codebook_size = None
        self.kl_weight = float(kl_weight)
        self.sample_posterior = bool(sample_posterior)
        self.logvar_range = (low, high)

    def extra_repr(self) -> str:
        return (
            f"code_dim={self.code_dim}, input_channels={self.dim}, kl_weight={self.kl_weight}, "
            f"sample_posterior={self.sample_posterior}"
        )

    def posterior(self, latents: Tensor) -> tuple[Tensor, Tensor]:
        """``(b, 2*code_dim, ...)`` -> (mean, clamped log-variance), each ``(b, code_dim, ...)``, float32+."""
        self.check_latents(latents)
        x = latents.to(compute_dtype(latents.dtype))
        mean, logvar = x.chunk(2, dim=1)
        return mean, logvar.clamp(*self.logvar_range)

    def _codes(self, mean: Tensor, logvar: Tensor) -> Tensor:
        if self.training and self.sample_posterior:
            return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        return mean.contiguous()

    def quantize(self, latents: Tensor) -> tuple[Tensor, None]:
        """``(b, 2*code_dim, ...)`` -> (codes ``(b, code_dim, ...)``, ``None``); no KL computed."""
        with autocast_off(latents.device):
            mean, logvar = self.posterior(latents)
            codes = self._codes(mean, logvar)
        return codes.to(latents.dtype), None

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Always raises: a continuous bottleneck has no indices (decode ``codes`` directly)."""
        raise VistokError(f"{type(self).__name__} is a continuous bottleneck and has no indices; decode its codes")

    def forward(self, latents: Tensor) -> QuantizerOutput:
        """``latents (b, 2*code_dim, ...)`` -> codes ``(b, code_dim, ...)``, KL loss, ``indices=None``."""
        with autocast_off(latents.device):
            mean, logvar = self.posterior(latents)
            codes = self._codes(mean, logvar)
            # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1 - log s^2) / 2 per element.
            kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).mean()
            loss = self.kl_weight * kl
        with torch.no_grad():
            stats = {"kl": kl.detach(), "posterior_std": torch.exp(0.5 * logvar).mean()}
        return QuantizerOutput(
            codes=codes.to(latents.dtype),
            indices=None,
            loss=loss,
            commitment_loss=torch.zeros((), dtype=kl.dtype, device=kl.device),
            stats=stats,
        )
