"""Adversarial training parts: a 3D StyleGAN-style discriminator, GAN losses, LeCAM and R1.

MAGVIT-v2 (Yu et al. 2023, appendix) trains its tokenizer against a StyleGAN discriminator
(Karras et al. 2020) whose 2D convolutions are replaced by 3D ones, with LeCAM regularization
(Tseng et al. 2021). The reference implementation it builds on (MAGVIT, Yu et al. 2023,
``videogvt/models/stylegan_discriminator_3d.py``) uses residual blocks of two 3x3x3 convolutions
with 2x down-sampling between them (average pooling there; MAGVIT-v2 anti-aliases it with a
blur, as StyleGAN2 does), leaky ReLU (slope 0.2), no normalization, and a dense head.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from vistok.configuration import Config
from vistok.errors import VistokError
from vistok.quantizers.distributed import world_size

__all__ = [
    "DISCRIMINATOR_PRESETS",
    "BlurDownsample3d",
    "DiscriminatorConfig",
    "LeCAM",
    "StyleGANDiscriminator3D",
    "hinge_d_loss",
    "hinge_g_loss",
    "ns_d_loss",
    "ns_g_loss",
    "r1_penalty",
]


# --------------------------------------------------------------------------- discriminator
@dataclass(frozen=True)
class DiscriminatorConfig(Config):
    """Shape of a ``StyleGANDiscriminator3D``.

    Attributes:
        in_channels: pixel channels.
        width: channels of the stem; block ``i`` has ``width * channel_multipliers[i]``.
        channel_multipliers: one residual block (each halving every dimension larger than one)
            per entry. MAGVIT's 128x128 setting is ``(2, 4, 4, 4, 4)``: 128 -> 4 in space,
            17 -> 1 frames in time.
        final_grid: the last feature map is average-pooled to ``1 x g x g`` before the dense
            layers (see ``StyleGANDiscriminator3D``).
        negative_slope: leaky-ReLU slope (0.2 in StyleGAN and MAGVIT).
    """

    in_channels: int = 3
    width: int = 64
    channel_multipliers: tuple[int, ...] = (2, 4, 4, 4, 4)
    final_grid: int = 4
    negative_slope: float = 0.2

    def __post_init__(self):
        object.__setattr__(self, "channel_multipliers", tuple(int(m) for m in self.channel_multipliers))
        if self.in_channels < 1 or self.width < 1 or self.final_grid < 1:
            raise VistokError(f"DiscriminatorConfig: in_channels, width and final_grid must be >= 1, got {self}")
        if not self.channel_multipliers or any(m < 1 for m in self.channel_multipliers):
            raise VistokError(
                f"DiscriminatorConfig: channel_multipliers must be a non-empty tuple of positive integers, "
                f"got {self.channel_multipliers}"
            )
        if not 0 <= self.negative_slope < 1:
            raise VistokError(f"DiscriminatorConfig: negative_slope must be in [0, 1), got {self.negative_slope}")

    family: ClassVar[str] = "discriminator"

    @classmethod
    def presets(cls) -> dict[str, dict]:
        return DISCRIMINATOR_PRESETS


# Named sizes (DiT-style table). "tiny" runs in milliseconds on a CPU; "magvit2" is the 128x128
# video setting of MAGVIT-v2 / MAGVIT.
DISCRIMINATOR_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=4, channel_multipliers=(1, 2), final_grid=2),
    "small": dict(width=32, channel_multipliers=(2, 4, 4), final_grid=4),
    "magvit2": dict(width=128, channel_multipliers=(2, 4, 4, 4, 4), final_grid=4),
}


class BlurDownsample3d(nn.Module):
    """Anti-aliased 2x down-sampling of every dimension of ``(b c t h w)`` that is larger than one.

    A binomial ``[1, 3, 3, 1] / 8`` low-pass along each dimension, then stride 2 (Zhang 2019,
    "Making convolutional networks shift-invariant again"; StyleGAN2's ``downsample2d``). Without
    the blur a strided discriminator reacts to aliasing patterns the generator can exploit.

    Size rule: a dimension of size ``n > 1`` becomes ``n // 2`` (one zero on each side, 4 taps,
    stride 2, so the last sample of an odd length is still seen); a dimension of size 1 is left
    alone. Images (``t = 1``) are therefore down-sampled in space only, and a 17-frame clip goes
    17 -> 8 -> 4 -> 2 -> 1 -> 1 in time.
    """

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        self.register_buffer("kernel", k / k.sum(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        k = self.kernel.to(x.dtype)
        for dim in (2, 3, 4):
            if x.shape[dim] == 1:
                continue
            shape, stride, pad = [1, 1, 1], [1, 1, 1], [0, 0, 0]
            shape[dim - 2], stride[dim - 2], pad[dim - 2] = 4, 2, 1
            weight = k.view(1, 1, *shape).expand(c, 1, *shape)
            x = F.conv3d(x, weight, stride=tuple(stride), padding=tuple(pad), groups=c)
        return x


class _ResBlock(nn.Module):
    """conv3 -> act -> blur-down -> conv3 -> act, plus a blurred, down-sampled 1x1 skip, over sqrt 2.

    No normalization: StyleGAN's discriminator has none, and per-sample independence keeps the R1
    penalty a property of each sample (batch statistics would couple them).
    """

    def __init__(self, c_in: int, c_out: int, slope: float):
        super().__init__()
        self.conv1 = nn.Conv3d(c_in, c_in, 3, padding=1)
        self.conv2 = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.skip = nn.Conv3d(c_in, c_out, 1, bias=False)
        self.down = BlurDownsample3d()
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), self.slope)
        h = F.leaky_relu(self.conv2(self.down(h)), self.slope)
        # Dividing by sqrt(2) keeps the variance of the sum of two unit-variance branches at one
        # (StyleGAN2, section 4.1 "residual" discriminator).
        return (h + self.skip(self.down(x))) / math.sqrt(2.0)


class StyleGANDiscriminator3D(nn.Module):
    """StyleGAN-style video discriminator with 3D convolutions: ``(b c t h w) -> (b,)`` logits.

    stem conv3 -> residual blocks (each halves every dimension > 1, see ``BlurDownsample3d``) ->
    conv3 -> average pool to ``1 x g x g`` -> dense -> leaky ReLU -> dense to one logit.

    The pooling before the dense layers is a deliberate change from MAGVIT's reference, which
    flattens the whole final map and so fixes the input size: here one network scores 1-frame
    images and 17-frame clips of any resolution, which joint image-video training (MAGVIT-v2,
    section 3.2) needs. Inputs ``(b c h w)`` are taken as 1-frame clips. StyleGAN's minibatch
    standard-deviation layer is left out so every logit depends on its own sample only.

    Args (keyword-only, as in ``DiscriminatorConfig``): ``in_channels``, ``width``,
    ``channel_multipliers``, ``final_grid``, ``negative_slope``; or ``config=``. Use
    ``from_preset("tiny")`` for a CPU-sized network.
    """

    def __init__(self, config: DiscriminatorConfig | None = None, **kwargs: Any):
        super().__init__()
        if config is None:
            try:
                config = DiscriminatorConfig(**kwargs)
            except TypeError as e:
                valid = sorted(asdict(DiscriminatorConfig()))
                raise VistokError(f"StyleGANDiscriminator3D: {e}; valid keys: {valid}") from e
        elif kwargs:
            raise VistokError("StyleGANDiscriminator3D: pass either config= or keyword arguments, not both")
        self.config = config
        slope = config.negative_slope
        self.stem = nn.Conv3d(config.in_channels, config.width, 3, padding=1)
        blocks, c = [], config.width
        for m in config.channel_multipliers:
            blocks.append(_ResBlock(c, config.width * m, slope))
            c = config.width * m
        self.blocks = nn.ModuleList(blocks)
        self.head_conv = nn.Conv3d(c, c, 3, padding=1)
        self.fc = nn.Linear(c * config.final_grid**2, c)
        self.out = nn.Linear(c, 1)
        # Xavier-uniform weights and zero biases, as MAGVIT's reference discriminator.
        for mod in self.modules():
            if isinstance(mod, (nn.Conv3d, nn.Linear)):
                nn.init.xavier_uniform_(mod.weight)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> StyleGANDiscriminator3D:
        """A named size from ``DISCRIMINATOR_PRESETS``, with optional field overrides."""
        return cls(DiscriminatorConfig.preset(name, overrides))

    def forward(self, video: Tensor) -> Tensor:
        """``(b c t h w)`` or ``(b c h w)`` pixels in [-1, 1] -> ``(b,)`` real-vs-fake logits."""
        if not isinstance(video, Tensor) or video.ndim not in (4, 5):
            raise VistokError(
                "discriminator: expected (b c t h w) videos or (b c h w) images, got "
                f"{getattr(video, 'shape', type(video))}"
            )
        if video.ndim == 4:
            video = video.unsqueeze(2)
        if video.shape[1] != self.config.in_channels:
            raise VistokError(
                f"discriminator: expected {self.config.in_channels} channels in dim 1, got shape {tuple(video.shape)}"
            )
        if video.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # On the CPU the discriminator runs in float32 even under bf16 autocast: with torch
            # 2.13's oneDNN kernels, bf16 training of this network gave non-finite weight gradients
            # now and then (head_conv, about once in 40 steps, not reproducible run to run; never in
            # float32), which the discriminator's AdamW then spread into every logit.
            with torch.autocast("cpu", enabled=False):
                return self._logits(video.float())
        return self._logits(video)

    def _logits(self, video: Tensor) -> Tensor:
        slope = self.config.negative_slope
        x = F.leaky_relu(self.stem(video), slope)
        for block in self.blocks:
            x = block(x)
        x = F.leaky_relu(self.head_conv(x), slope)
        g = self.config.final_grid
        x = F.adaptive_avg_pool3d(x, (1, g, g)).flatten(1)  # (b, c * g * g)
        x = F.leaky_relu(self.fc(x), slope)
        return self.out(x).squeeze(1)


# --------------------------------------------------------------------------- losses
# Conventions follow MAGVIT's reference (``videogvt/train_lib/losses.py``): the discriminator
# losses are the *sum* of the real and fake terms (taming-transformers halves it; a factor of 2 is
# absorbed by the learning rate), each term a mean over the batch.


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Hinge loss of the discriminator (Lim & Ye 2017): ``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]``."""
    return F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean()


def hinge_g_loss(logits_fake: Tensor) -> Tensor:
    """Hinge loss of the generator: ``-E[D(G(z))]``."""
    return -logits_fake.mean()


def ns_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Non-saturating (logistic) discriminator loss (Goodfellow et al. 2014), as StyleGAN uses it.

    ``E[softplus(-D(x))] + E[softplus(D(G(z)))]``, i.e. binary cross-entropy with real = 1,
    fake = 0 on the logits (softplus is the numerically stable form of ``-log sigmoid``).
    """
    return F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean()


def ns_g_loss(logits_fake: Tensor) -> Tensor:
    """Non-saturating generator loss: ``E[softplus(-D(G(z)))] = -E[log sigmoid(D(G(z)))]``."""
    return F.softplus(-logits_fake).mean()


def r1_penalty(real: Tensor, logits: Tensor) -> Tensor:
    """R1 gradient penalty (Mescheder et al. 2018): ``E_x ||grad_x D(x)||^2`` on real data.

    ``real`` must require grad and ``logits = D(real)`` must have been computed from it. The
    graph is kept (``create_graph``) so the penalty trains the discriminator. Returned without the
    ``gamma / 2`` factor; the caller's weight plays that role (StyleGAN's gamma = 2 * weight).
    """
    if not real.requires_grad:
        raise VistokError(
            "r1_penalty: `real` does not require grad; call real.requires_grad_(True) before computing "
            "logits = discriminator(real)"
        )
    if logits.shape[0] != real.shape[0]:
        raise VistokError(f"r1_penalty: {logits.shape[0]} logits for {real.shape[0]} real samples")
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.float().square().flatten(1).sum(1).mean()


class LeCAM(nn.Module):
    """LeCAM regularizer (Tseng et al. 2021, "Regularizing GANs under limited data", eq. 3).

    ``R = E_x[(D(x) - a_F)^2] + E_z[(D(G(z)) - a_R)^2]`` with ``a_R`` / ``a_F`` exponential moving
    averages of the discriminator's mean logit on real / fake batches. It pulls each prediction
    toward the *other* class's running mean, bounding how far the discriminator can separate them
    (the paper relates it to the LeCam divergence), which stabilizes training on small data.

    The averages are buffers, so they are saved and restored with the module's state dict. They
    start at 0 and are updated as ``a <- decay * a + (1 - decay) * mean(logits)`` (decay 0.99 in
    Tseng et al.'s code). Under ``torch.distributed`` the batch means are averaged over ranks
    first, so every rank holds the same averages.

    ``one_sided=True`` gives the variant of the authors' released code (``lecam-gan``,
    ``biggan_cifar/losses.py``), ``relu(D(x) - a_F)^2`` and ``relu(a_R - D(G(z)))^2``: only
    predictions on the far side of the other class's average are pulled back. The default is the
    paper's two-sided equation. (MAGVIT's reference applies the one-sided form to batch-mean
    logits.)
    """

    ema_real: Tensor
    ema_fake: Tensor

    def __init__(self, decay: float = 0.99, *, one_sided: bool = False):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise VistokError(f"LeCAM: decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.one_sided = bool(one_sided)
        self.register_buffer("ema_real", torch.zeros(()))
        self.register_buffer("ema_fake", torch.zeros(()))

    @torch.no_grad()
    def update(self, logits_real: Tensor, logits_fake: Tensor) -> None:
        """Move the averages toward this batch's mean logits."""
        means = torch.stack([logits_real.detach().float().mean(), logits_fake.detach().float().mean()])
        if world_size() > 1:
            dist.all_reduce(means, op=dist.ReduceOp.SUM)
            means /= world_size()
        means = means.to(self.ema_real.device)
        self.ema_real.mul_(self.decay).add_((1.0 - self.decay) * means[0])
        self.ema_fake.mul_(self.decay).add_((1.0 - self.decay) * means[1])

    def penalty(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        """The regularizer with the current averages (differentiable in the logits)."""
        real_gap = logits_real.float() - self.ema_fake
        fake_gap = self.ema_real - logits_fake.float()
        if self.one_sided:
            real_gap, fake_gap = F.relu(real_gap), F.relu(fake_gap)
        return real_gap.square().mean() + fake_gap.square().mean()

    def forward(self, logits_real: Tensor, logits_fake: Tensor, *, update: bool | None = None) -> Tensor:
        """Update the averages (by default only in training mode), then return the penalty.

        Updating first and then penalizing against the updated averages is the order of Tseng et
        al.'s reference code (the averages are updated inside its discriminator loss).
        """
        if update is None:
            update = self.training
        if update:
            self.update(logits_real, logits_fake)
        return self.penalty(logits_real, logits_fake)
