"""The tokenizer's training objective: reconstruction + quantizer + perceptual + adversarial.

MAGVIT-v2 (Yu et al. 2023, appendix) trains its tokenizer with the MAGVIT recipe: reconstruction,
perceptual loss (weight 0.1), a StyleGAN discriminator with 3D convolutions (generator adversarial
weight 0.1), LeCAM regularization (weight 0.001) and the LFQ losses. The reconstruction term is
the mean squared error with weight 1, as in MAGVIT's reference trainer
(``videogvt/trainers/vqgan_trainer.py``: ``reconstruction_loss = l2_loss(real, generated)``),
whose configs also give the non-saturating GAN loss and the LeCAM average decay (``polyak_decay``
0.999) used as defaults here. L1 is available (``reconstruction="l1"``), as in taming's VQGAN.

Two calls per training step, one per player::

    g_loss, g_stats = objective.generator_loss(video, x_hat, out.loss, step, discriminator)
    d_loss, d_stats = objective.discriminator_loss(video, x_hat, step, discriminator)

Before ``gan_start_step`` (or with ``adversarial_weight = 0``) the adversarial terms are exactly
absent: the discriminator is not called at all, and ``discriminator_loss`` returns a constant
zero that does not require grad (skip the discriminator's optimizer step then; ``d_stats`` is
empty). The perceptual term likewise starts at ``perceptual_start_step`` and needs an LPIPS
network given to the constructor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vistok.configuration import Config
from vistok.errors import VistokError
from vistok.losses.adversarial import LeCAM, hinge_d_loss, hinge_g_loss, ns_d_loss, ns_g_loss, r1_penalty
from vistok.losses.perceptual import PerceptualLoss
from vistok.metrics.perceptual import LPIPS
from vistok.metrics.quality import ms_ssim

__all__ = ["LossConfig", "TokenizerLoss"]

_GAN_LOSSES = ("hinge", "non_saturating")


@dataclass
class LossConfig(Config):
    """Weights and schedule of the tokenizer objective (defaults: MAGVIT-v2 / MAGVIT).

    Attributes:
        reconstruction: ``"l2"`` (mean squared error; MAGVIT's reference) or ``"l1"``.
        reconstruction_weight: weight of the reconstruction term (1).
        ms_ssim_weight: weight of ``1 - MS-SSIM(x, x_hat)`` (per frame, as many scales as the frames
            hold; skipped for frames under 11 pixels). 0 (default, MAGVIT-v2's objective) disables
            it. Learned image codecs train on it to be judged in MS-SSIM (Ballé et al. 2018); a
            mix with an L1/L2 term keeps colours right (Zhao et al. 2017).
        perceptual_weight: LPIPS weight (0.1); used only when an LPIPS network is given.
        perceptual_start_step: first step with the perceptual term.
        perceptual_frames: score this many random frames per clip for LPIPS (``None``: all).
        adversarial_weight: generator adversarial weight (0.1). 0 disables the GAN entirely.
        gan_loss: ``"non_saturating"`` (StyleGAN's logistic loss, MAGVIT's setting) or ``"hinge"``.
        gan_start_step: first step with any adversarial term (default 10k). MAGVIT's reference
            trains adversarially from step 0, but starts from an image-pretrained tokenizer; from
            scratch, a reconstruction-only warm-up lets the decoder produce images before a
            discriminator judges them (taming's VQGAN starts its discriminator late for the same
            reason). 10k is a conventional choice, not a paper value; 0 disables the warm-up.
        lecam_weight: LeCAM regularization weight on the discriminator (0.001).
        lecam_decay: decay of LeCAM's logit averages (0.999, MAGVIT's ``polyak_decay``).
        r1_weight: R1 gradient-penalty weight (0: off). MAGVIT's reference uses 10 with the same
            convention (``weight * E||grad D(x)||^2``).
        adaptive_weight: scale the adversarial term by ``||grad L_nll|| / ||grad L_adv||`` at the
            decoder's last layer (VQGAN, Esser et al. 2021, eq. 7); off by default, as in MAGVIT.
        adaptive_weight_max: upper clamp of that ratio (1e4, as in VQGAN).
    """

    reconstruction: str = "l2"
    reconstruction_weight: float = 1.0
    ms_ssim_weight: float = 0.0
    perceptual_weight: float = 0.1
    perceptual_start_step: int = 0
    perceptual_frames: int | None = None
    adversarial_weight: float = 0.1
    gan_loss: str = "non_saturating"
    gan_start_step: int = 10_000
    lecam_weight: float = 0.001
    lecam_decay: float = 0.999
    r1_weight: float = 0.0
    adaptive_weight: bool = False
    adaptive_weight_max: float = 1e4

    def __post_init__(self):
        if self.reconstruction not in ("l1", "l2"):
            raise VistokError(f"LossConfig.reconstruction must be 'l1' or 'l2', got {self.reconstruction!r}")
        if self.gan_loss not in _GAN_LOSSES:
            raise VistokError(f"LossConfig.gan_loss must be one of {_GAN_LOSSES}, got {self.gan_loss!r}")
        for name in ("reconstruction_weight", "ms_ssim_weight", "perceptual_weight", "adversarial_weight", "lecam_weight", "r1_weight"):
            if getattr(self, name) < 0:
                raise VistokError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("perceptual_start_step", "gan_start_step"):
            if getattr(self, name) < 0:
                raise VistokError(f"LossConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.perceptual_frames is not None and self.perceptual_frames < 1:
            raise VistokError(f"LossConfig.perceptual_frames must be None or >= 1, got {self.perceptual_frames}")
        if not 0.0 <= self.lecam_decay < 1.0:
            raise VistokError(f"LossConfig.lecam_decay must be in [0, 1), got {self.lecam_decay}")
        if self.adaptive_weight_max <= 0:
            raise VistokError(f"LossConfig.adaptive_weight_max must be > 0, got {self.adaptive_weight_max}")


class TokenizerLoss(nn.Module):
    """Generator and discriminator objectives of tokenizer training.

    Args:
        config: a ``LossConfig`` (defaults if omitted).
        perceptual: an ``LPIPS`` network (wrapped in ``PerceptualLoss`` with
            ``config.perceptual_frames``) or a ready ``PerceptualLoss``; ``None`` leaves the
            perceptual term out whatever its weight.

    The module holds LeCAM's logit averages as buffers, so put it in the training checkpoint (its
    state dict also carries the LPIPS weights when one is given). LeCAM's averages move only in
    training mode (``.train()``).
    """

    def __init__(self, config: LossConfig | None = None, *, perceptual: LPIPS | PerceptualLoss | None = None):
        super().__init__()
        self.config = config = config if config is not None else LossConfig()
        if isinstance(perceptual, LPIPS):
            perceptual = PerceptualLoss(perceptual, num_frames=config.perceptual_frames)
        elif perceptual is not None and not isinstance(perceptual, PerceptualLoss):
            raise VistokError(
                "TokenizerLoss: perceptual must be an LPIPS or PerceptualLoss module or None, got "
                f"{type(perceptual).__name__}"
            )
        self.perceptual = perceptual
        self.lecam = LeCAM(config.lecam_decay)

    # ------------------------------------------------------------------ schedule
    def perceptual_active(self, step: int) -> bool:
        c = self.config
        return self.perceptual is not None and c.perceptual_weight > 0 and step >= c.perceptual_start_step

    def gan_active(self, step: int) -> bool:
        c = self.config
        return c.adversarial_weight > 0 and step >= c.gan_start_step

    # ------------------------------------------------------------------ generator
    def generator_loss(
        self,
        video: Tensor,
        x_hat: Tensor,
        quantizer_loss: Tensor | float,
        step: int,
        discriminator: nn.Module | None = None,
        *,
        last_layer: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """The tokenizer's (generator's) loss.

        Args:
            video: ``(b c t h w)`` (or ``(b c h w)``) target pixels in [-1, 1].
            x_hat: reconstruction of the same shape.
            quantizer_loss: the quantizer's already-weighted auxiliary loss (``TokenizerOutput.loss``),
                added as is.
            step: the global training step (warm-ups are decided on it).
            discriminator: maps pixels to ``(b,)`` logits; ``None`` means no adversarial term.
                Gradients of the adversarial term also reach its parameters: zero them before the
                discriminator's own step.
            last_layer: the decoder's last weight, required only with ``config.adaptive_weight``.

        Returns:
            ``(loss, stats)``: a scalar tensor, and detached floats ``loss``, ``recon``,
            ``quantizer``, plus ``perceptual`` / ``g_adv`` / ``adaptive_weight`` when those terms
            are active.
        """
        c = self.config
        _check_pair(video, x_hat, "generator_loss")
        video = video.detach()
        diff = x_hat.float() - video.float()
        recon = diff.abs().mean() if c.reconstruction == "l1" else diff.square().mean()
        if not isinstance(quantizer_loss, Tensor):
            quantizer_loss = torch.as_tensor(float(quantizer_loss), device=x_hat.device)
        nll = c.reconstruction_weight * recon
        stats = {"recon": recon.item(), "quantizer": float(quantizer_loss.detach())}
        if c.ms_ssim_weight > 0 and min(video.shape[-2:]) >= 11:
            with torch.autocast(device_type=x_hat.device.type, enabled=False):
                structural = 1.0 - ms_ssim(video.float(), x_hat.float()).mean()
            nll = nll + c.ms_ssim_weight * structural
            stats["ms_ssim_loss"] = structural.item()
        if self.perceptual_active(step):
            p = self.perceptual(video, x_hat)
            nll = nll + c.perceptual_weight * p
            stats["perceptual"] = p.item()
        loss = nll + quantizer_loss
        if discriminator is not None and self.gan_active(step):
            logits_fake = discriminator(x_hat).float()  # losses in float32 under autocast
            g_adv = hinge_g_loss(logits_fake) if c.gan_loss == "hinge" else ns_g_loss(logits_fake)
            factor = 1.0
            if c.adaptive_weight:
                factor = self._adaptive_factor(nll, g_adv, last_layer)
                stats["adaptive_weight"] = float(factor)
            loss = loss + c.adversarial_weight * factor * g_adv
            stats["g_adv"] = g_adv.item()
        stats["loss"] = loss.item()
        return loss, stats

    def _adaptive_factor(self, nll: Tensor, g_adv: Tensor, last_layer: Tensor | None) -> Tensor | float:
        """VQGAN's balance: ``||grad_w nll|| / (||grad_w g_adv|| + 1e-4)`` at the last layer ``w``.

        It rescales the adversarial gradient to the size of the reconstruction gradient where both
        enter the decoder, so the two stay comparable whatever their raw scales. Detached. Without
        a graph (evaluation under ``no_grad``) the factor is 1.
        """
        if last_layer is None:
            raise VistokError(
                "generator_loss: config.adaptive_weight needs last_layer= the decoder's last weight "
                "(e.g. tokenizer.decoder.conv_out.weight)"
            )
        if not (torch.is_grad_enabled() and nll.requires_grad and g_adv.requires_grad):
            return 1.0
        (g_nll,) = torch.autograd.grad(nll, last_layer, retain_graph=True)
        (g_gan,) = torch.autograd.grad(g_adv, last_layer, retain_graph=True)
        ratio = g_nll.norm() / (g_gan.norm() + 1e-4)
        return ratio.clamp(0.0, self.config.adaptive_weight_max).detach()

    # ------------------------------------------------------------------ discriminator
    def discriminator_loss(
        self, video: Tensor, x_hat: Tensor, step: int, discriminator: nn.Module
    ) -> tuple[Tensor, dict[str, float]]:
        """The discriminator's loss: GAN loss + ``lecam_weight`` * LeCAM + ``r1_weight`` * R1.

        Both inputs are detached (the tokenizer gets no gradient from this loss). Real and fake
        clips go through the discriminator in one batch. Before ``gan_start_step`` returns
        ``(zero, {})`` without calling the discriminator.

        Returns:
            ``(loss, stats)`` with detached floats ``d_loss``, ``d_adv``, ``logits_real``,
            ``logits_fake`` and, when on, ``lecam``, ``lecam_ema_real``, ``lecam_ema_fake``, ``r1``.
        """
        c = self.config
        _check_pair(video, x_hat, "discriminator_loss")
        if not self.gan_active(step):
            return torch.zeros((), device=video.device), {}
        if discriminator is None:
            raise VistokError("discriminator_loss: a discriminator is needed once the GAN has started")
        real = video.detach()
        fake = x_hat.detach().to(real.dtype)
        if c.r1_weight > 0:
            real = real.clone().requires_grad_(True)
        n = real.shape[0]
        logits = discriminator(torch.cat([real, fake], dim=0)).float()
        logits_real, logits_fake = logits[:n], logits[n:]
        d_adv = (hinge_d_loss if c.gan_loss == "hinge" else ns_d_loss)(logits_real, logits_fake)
        loss = d_adv
        stats = {
            "d_adv": d_adv.item(),
            "logits_real": logits_real.detach().float().mean().item(),
            "logits_fake": logits_fake.detach().float().mean().item(),
        }
        if c.lecam_weight > 0:
            lecam = self.lecam(logits_real, logits_fake)
            loss = loss + c.lecam_weight * lecam
            stats.update(
                lecam=lecam.item(), lecam_ema_real=self.lecam.ema_real.item(), lecam_ema_fake=self.lecam.ema_fake.item()
            )
        if c.r1_weight > 0:
            r1 = r1_penalty(real, logits_real)
            loss = loss + c.r1_weight * r1
            stats["r1"] = r1.item()
        stats["d_loss"] = loss.item()
        return loss, stats


def _check_pair(video: Tensor, x_hat: Tensor, name: str) -> None:
    if not isinstance(video, Tensor) or not isinstance(x_hat, Tensor):
        raise VistokError(f"{name}: video and x_hat must be tensors")
    if video.shape != x_hat.shape:
        raise VistokError(
            f"{name}: video and x_hat must have the same shape, got {tuple(video.shape)} and {tuple(x_hat.shape)}"
        )
    if video.ndim not in (4, 5):
        raise VistokError(f"{name}: expected (b c t h w) videos or (b c h w) images, got shape {tuple(video.shape)}")
