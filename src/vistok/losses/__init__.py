"""Training losses of the tokenizers: perceptual (LPIPS), adversarial (3D discriminator, LeCAM, R1)
and the combined objective ``TokenizerLoss``."""

from vistok.losses.adversarial import (
    DISCRIMINATOR_PRESETS,
    BlurDownsample3d,
    DiscriminatorConfig,
    LeCAM,
    StyleGANDiscriminator3D,
    hinge_d_loss,
    hinge_g_loss,
    ns_d_loss,
    ns_g_loss,
    r1_penalty,
)
from vistok.losses.objective import LossConfig, TokenizerLoss
from vistok.losses.perceptual import PerceptualLoss

__all__ = [
    "DISCRIMINATOR_PRESETS",
    "BlurDownsample3d",
    "DiscriminatorConfig",
    "LeCAM",
    "LossConfig",
    "PerceptualLoss",
    "StyleGANDiscriminator3D",
    "TokenizerLoss",
    "hinge_d_loss",
    "hinge_g_loss",
    "ns_d_loss",
    "ns_g_loss",
    "r1_penalty",
]
