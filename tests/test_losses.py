"""Training losses: the 3D discriminator, GAN losses on hand-computed logits, LeCAM and R1 against
hand computations, the perceptual loss on videos, and TokenizerLoss warm-ups (exact absence)."""

import math

import pytest
import torch
from torch import nn

from vistok.errors import VistokError
from vistok.losses import (
    BlurDownsample3d,
    DiscriminatorConfig,
    LeCAM,
    LossConfig,
    PerceptualLoss,
    StyleGANDiscriminator3D,
    TokenizerLoss,
    hinge_d_loss,
    hinge_g_loss,
    ns_d_loss,
    ns_g_loss,
    r1_penalty,
)
from vistok.metrics import LPIPS


def _tiny_d(seed=0) -> StyleGANDiscriminator3D:
    torch.manual_seed(seed)
    return StyleGANDiscriminator3D.from_preset("tiny")


def _clip(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1


class RaisingDiscriminator(nn.Module):
    """Any call is a test failure: warm-ups must not run the discriminator at all."""

    def forward(self, x):
        raise AssertionError("the discriminator was called during the warm-up")


# --------------------------------------------------------------------------- discriminator
@pytest.mark.parametrize(
    "shape",
    [(2, 3, 32, 32), (2, 3, 1, 32, 32), (2, 3, 17, 32, 32), (1, 3, 17, 24, 40), (3, 3, 5, 16, 16)],
)
def test_discriminator_shapes_and_gradients(shape):
    d = _tiny_d()
    x = _clip(shape).requires_grad_(True)
    logits = d(x)
    assert logits.shape == (shape[0],) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in d.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_discriminator_image_equals_one_frame_clip_and_samples_are_independent():
    d = _tiny_d()
    x = _clip((3, 3, 32, 32))
    assert torch.equal(d(x), d(x.unsqueeze(2)))
    v = _clip((3, 3, 17, 32, 32), seed=1)
    base = d(v)
    v2 = v.clone()
    v2[1] = _clip((3, 17, 32, 32), seed=2)
    out = d(v2)
    # no batch statistics: changing clip 1 changes only logit 1 (what makes R1 per-sample)
    assert torch.allclose(out[[0, 2]], base[[0, 2]], atol=1e-6) and not torch.allclose(out[1], base[1])
    # the same clip alone gives the same logit
    assert torch.allclose(d(v[2:3]), base[2:3], atol=1e-6)


def test_discriminator_is_float32_on_cpu_under_bf16_autocast():
    """bf16 training of the discriminator on the CPU gave sporadic non-finite weight gradients
    (oneDNN, torch 2.13); under CPU autocast it runs in float32: the very logits and gradients of
    the plain float32 network, while the generator's ops around it stay bf16."""
    d = _tiny_d()
    v = _clip((2, 3, 5, 16, 16), seed=3)
    x = v.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = d(x.bfloat16())
        assert torch.nn.functional.linear(v, torch.ones(16, 16)).dtype == torch.bfloat16
    assert logits.dtype == torch.float32
    logits.sum().backward()
    grads = [p.grad.clone() for p in d.parameters()]
    d.zero_grad()
    ref = d(v.bfloat16().float())
    ref.sum().backward()
    assert torch.equal(logits, ref)
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, d.parameters()))


def test_discriminator_sees_time():
    """Temporal order matters to a 3D discriminator: reversing a clip changes its logit."""
    d = _tiny_d()
    v = _clip((1, 3, 17, 32, 32))
    assert not torch.allclose(d(v), d(v.flip(2)))


def test_blur_downsample_size_rule_and_low_pass():
    down = BlurDownsample3d()
    assert down(torch.zeros(1, 2, 17, 32, 31)).shape == (1, 2, 8, 16, 15)
    assert down(torch.zeros(1, 2, 1, 32, 32)).shape == (1, 2, 1, 16, 16)  # t = 1 is kept
    assert down(torch.zeros(1, 2, 2, 1, 8)).shape == (1, 2, 1, 1, 4)
    # normalized low-pass: a constant stays constant away from the zero-padded border
    y = down(torch.full((1, 1, 1, 16, 16), 3.0))
    assert torch.allclose(y[..., 1:-1, 1:-1], torch.full_like(y[..., 1:-1, 1:-1], 3.0))
    # and the highest frequency (a +-1 checkerboard) is removed in the interior, not aliased
    grid = torch.arange(16)
    checker = ((grid[:, None] + grid[None, :]) % 2 * 2 - 1).float().view(1, 1, 1, 16, 16)
    assert down(checker)[..., 1:-1, 1:-1].abs().max() < 1e-6


def test_discriminator_config_errors_and_presets():
    with pytest.raises(VistokError, match="channel_multipliers"):
        StyleGANDiscriminator3D(channel_multipliers=())
    with pytest.raises(VistokError, match="valid keys"):
        StyleGANDiscriminator3D(filters=3)
    with pytest.raises(VistokError, match="unknown discriminator preset"):
        StyleGANDiscriminator3D.from_preset("huge")
    d = StyleGANDiscriminator3D(config=DiscriminatorConfig(width=2, channel_multipliers=(1,), final_grid=1))
    assert d(_clip((1, 3, 16, 16))).shape == (1,)
    with pytest.raises(VistokError, match="channels"):
        d(_clip((1, 4, 16, 16)))
    with pytest.raises(VistokError, match="b c t h w"):
        d(_clip((3, 16, 16)))


# --------------------------------------------------------------------------- GAN losses
REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-2.0, 0.0, 1.5])


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_hinge_losses_on_hand_computed_logits():
    # relu(1 - r) = (0, 0.5, 2), relu(1 + f) = (0, 1, 2.5)
    assert hinge_d_loss(REAL, FAKE).item() == pytest.approx(2.5 / 3 + 3.5 / 3)
    assert hinge_g_loss(FAKE).item() == pytest.approx(0.5 / 3)


def test_non_saturating_losses_on_hand_computed_logits():
    d = sum(_softplus(-r) for r in REAL.tolist()) / 3 + sum(_softplus(f) for f in FAKE.tolist()) / 3
    g = sum(_softplus(-f) for f in FAKE.tolist()) / 3
    assert ns_d_loss(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    assert ns_g_loss(FAKE).item() == pytest.approx(g, rel=1e-6)
    # equal to binary cross-entropy with labels real = 1, fake = 0; stable for large logits
    bce = nn.functional.binary_cross_entropy_with_logits
    assert ns_d_loss(REAL, FAKE).item() == pytest.approx(
        (bce(REAL, torch.ones(3)) + bce(FAKE, torch.zeros(3))).item(), rel=1e-6
    )
    assert ns_g_loss(torch.tensor([-200.0])).item() == pytest.approx(200.0)


# --------------------------------------------------------------------------- LeCAM
def test_lecam_ema_update_and_penalty_by_hand():
    lecam = LeCAM(decay=0.9)
    r1, f1 = torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -3.0])
    p1 = lecam(r1, f1)
    # ema_real = 0.9 * 0 + 0.1 * 2 = 0.2; ema_fake = -0.2 (updated before the penalty)
    assert lecam.ema_real.item() == pytest.approx(0.2) and lecam.ema_fake.item() == pytest.approx(-0.2)
    # mean((r + 0.2)^2) + mean((f - 0.2)^2) = 2 * (1.2^2 + 3.2^2) / 2
    assert p1.item() == pytest.approx(1.2**2 + 3.2**2)
    r2, f2 = torch.tensor([0.0]), torch.tensor([1.0])
    p2 = lecam(r2, f2)
    # ema_real = 0.9 * 0.2 + 0.1 * 0 = 0.18; ema_fake = 0.9 * -0.2 + 0.1 * 1 = -0.08
    assert lecam.ema_real.item() == pytest.approx(0.18) and lecam.ema_fake.item() == pytest.approx(-0.08)
    assert p2.item() == pytest.approx((0.0 + 0.08) ** 2 + (1.0 - 0.18) ** 2)


def test_lecam_one_sided_eval_mode_gradients_and_checkpoint():
    lecam = LeCAM(decay=0.5, one_sided=True)
    lecam(torch.tensor([2.0]), torch.tensor([-2.0]))  # ema_real = 1, ema_fake = -1
    # one-sided: only real logits above ema_fake and fake logits below ema_real are penalized
    assert lecam.penalty(torch.tensor([-3.0]), torch.tensor([4.0])).item() == 0.0
    assert lecam.penalty(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(1.0 + 1.0)

    lecam.eval()
    before = (lecam.ema_real.clone(), lecam.ema_fake.clone())
    lecam(torch.tensor([10.0]), torch.tensor([10.0]))
    assert torch.equal(lecam.ema_real, before[0]) and torch.equal(lecam.ema_fake, before[1])

    logits = torch.tensor([0.5, -0.5], requires_grad=True)
    LeCAM(decay=0.9)(logits, logits).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0

    state = lecam.state_dict()
    assert set(state) == {"ema_real", "ema_fake"}
    fresh = LeCAM(decay=0.5, one_sided=True)
    fresh.load_state_dict(state)
    assert fresh.ema_real.item() == pytest.approx(1.0) and fresh.ema_fake.item() == pytest.approx(-1.0)


# --------------------------------------------------------------------------- R1
class _Linear(nn.Module):
    """D(x) = sum(a * x^2) / 2 per sample, so grad_x D = a * x and ||grad||^2 = sum(a^2 x^2)."""

    def __init__(self, shape):
        super().__init__()
        self.a = nn.Parameter(torch.linspace(0.5, 2.0, math.prod(shape)).view(shape))

    def forward(self, x):
        return (self.a * x * x).flatten(1).sum(1) / 2


def test_r1_penalty_by_hand_and_trains_the_discriminator():
    d = _Linear((2, 3, 4))
    x = _clip((5, 2, 3, 4)).requires_grad_(True)
    penalty = r1_penalty(x, d(x))
    expected = (d.a * x).detach().square().flatten(1).sum(1).mean()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-6)
    penalty.backward()  # create_graph: the penalty has gradients for the discriminator
    assert d.a.grad is not None and d.a.grad.abs().sum() > 0
    with pytest.raises(VistokError, match="requires_grad"):
        r1_penalty(x.detach(), d(x.detach()))


# --------------------------------------------------------------------------- perceptual loss
def _lpips(width=4, seed=0):
    torch.manual_seed(seed)
    return LPIPS(width=width)


def test_perceptual_loss_folds_frames_and_freezes_network():
    lp = _lpips()
    loss = PerceptualLoss(lp)
    video = _clip((2, 3, 3, 16, 16))
    x_hat = (video + 0.2 * _clip((2, 3, 3, 16, 16), seed=1)).requires_grad_(True)
    value = loss(video, x_hat)
    per_frame = torch.stack([lp(video[:, :, i], x_hat[:, :, i]) for i in range(3)])
    assert value.item() == pytest.approx(per_frame.mean().item(), rel=1e-5)
    assert loss(video, video).item() == 0.0
    value.backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in lp.parameters())
    loss.train()
    assert not loss.lpips.training
    assert loss(video[:, :, 0], x_hat[:, :, 0]).item() == pytest.approx(per_frame[0].mean().item(), rel=1e-5)


def test_perceptual_loss_random_frame_subset():
    lp = _lpips()
    loss = PerceptualLoss(lp, num_frames=2)
    video = _clip((2, 3, 5, 16, 16))
    x_hat = video + 0.3 * _clip((2, 3, 5, 16, 16), seed=1)
    value = loss(video, x_hat, generator=torch.Generator().manual_seed(7))
    chosen = torch.randperm(5, generator=torch.Generator().manual_seed(7))[:2].sort().values
    expected = torch.stack([lp(video[:, :, int(i)], x_hat[:, :, int(i)]) for i in chosen]).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    # all frames: a different (full) average
    full = PerceptualLoss(lp)(video, x_hat)
    assert value.item() != pytest.approx(full.item(), rel=1e-6)
    with pytest.raises(VistokError, match="num_frames"):
        PerceptualLoss(lp, num_frames=0)


# --------------------------------------------------------------------------- TokenizerLoss
def _batch(shape=(2, 3, 5, 16, 16)):
    video = _clip(shape)
    x_hat = (video + 0.1 * _clip(shape, seed=3)).requires_grad_(True)
    return video, x_hat, torch.tensor(0.37, requires_grad=True)


def test_defaults_are_the_documented_magvit_weights():
    c = LossConfig()
    assert (c.reconstruction, c.reconstruction_weight, c.perceptual_weight) == ("l2", 1.0, 0.1)
    assert (c.adversarial_weight, c.lecam_weight, c.r1_weight) == (0.1, 0.001, 0.0)
    assert c.gan_loss == "non_saturating" and c.adaptive_weight is False


def test_generator_warmup_is_exactly_reconstruction_plus_quantizer():
    objective = TokenizerLoss(LossConfig(gan_start_step=5, perceptual_start_step=3))  # no LPIPS given
    video, x_hat, q = _batch()
    for step in range(5):
        loss, stats = objective.generator_loss(video, x_hat, q, step, RaisingDiscriminator())
        assert torch.equal(loss, (x_hat - video).square().mean() + q)
        assert "g_adv" not in stats and "perceptual" not in stats
        assert stats["loss"] == loss.item() and stats["quantizer"] == pytest.approx(0.37)
        d_loss, d_stats = objective.discriminator_loss(video, x_hat, step, RaisingDiscriminator())
        assert d_loss.item() == 0.0 and not d_loss.requires_grad and d_stats == {}
    l1 = TokenizerLoss(LossConfig(reconstruction="l1", gan_start_step=5))
    loss, _ = l1.generator_loss(video, x_hat, q, 0, RaisingDiscriminator())
    assert torch.equal(loss, (x_hat - video).abs().mean() + q)


def test_generator_perceptual_warmup_with_lpips():
    lp = _lpips()
    objective = TokenizerLoss(LossConfig(gan_start_step=100, perceptual_start_step=2), perceptual=lp)
    video, x_hat, q = _batch()
    loss, stats = objective.generator_loss(video, x_hat, q, 1, RaisingDiscriminator())
    assert torch.equal(loss, (x_hat - video).square().mean() + q) and "perceptual" not in stats
    loss, stats = objective.generator_loss(video, x_hat, q, 2, RaisingDiscriminator())
    p = PerceptualLoss(lp)(video, x_hat)
    assert torch.equal(loss, (x_hat - video).square().mean() + 0.1 * p + q)
    assert stats["perceptual"] == pytest.approx(p.item())
    loss.backward()
    assert x_hat.grad is not None and q.grad is not None


def test_adversarial_terms_after_warmup_match_hand_assembly():
    d = _tiny_d()
    cfg = LossConfig(gan_start_step=3, lecam_decay=0.9)
    objective = TokenizerLoss(cfg)
    video, x_hat, q = _batch()

    loss, stats = objective.generator_loss(video, x_hat, q, 3, d)
    expected = (x_hat - video).square().mean() + q + 0.1 * ns_g_loss(d(x_hat))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["g_adv"] == pytest.approx(ns_g_loss(d(x_hat)).item(), rel=1e-6)
    loss.backward()
    assert x_hat.grad.abs().sum() > 0  # the adversarial gradient reaches the reconstruction

    d.zero_grad()
    x_hat.grad = None
    d_loss, d_stats = objective.discriminator_loss(video, x_hat, 3, d)
    real, fake = d(video), d(x_hat.detach())
    ema_real, ema_fake = 0.1 * real.mean(), 0.1 * fake.mean()  # first update from zero, decay 0.9
    lecam = (real - ema_fake).square().mean() + (fake - ema_real).square().mean()
    expected_d = ns_d_loss(real, fake) + 0.001 * lecam
    assert d_loss.item() == pytest.approx(expected_d.item(), rel=1e-5)
    assert objective.lecam.ema_real.item() == pytest.approx(ema_real.item(), rel=1e-5)
    assert d_stats["lecam"] == pytest.approx(lecam.item(), rel=1e-5)
    d_loss.backward()
    assert x_hat.grad is None  # the tokenizer gets nothing from the discriminator's loss
    assert all(p.grad is not None for p in d.parameters())
    # the EMA buffers travel with the objective's state dict (checkpointing)
    assert {"lecam.ema_real", "lecam.ema_fake"} <= set(objective.state_dict())


def test_hinge_r1_and_zero_adversarial_weight():
    d = _tiny_d()
    objective = TokenizerLoss(LossConfig(gan_start_step=0, gan_loss="hinge", lecam_weight=0.0, r1_weight=2.0))
    video, x_hat, q = _batch((2, 3, 16, 16))  # images: b c h w
    loss, stats = objective.generator_loss(video, x_hat, q, 0, d)
    assert stats["g_adv"] == pytest.approx(hinge_g_loss(d(x_hat)).item(), rel=1e-6)
    d_loss, d_stats = objective.discriminator_loss(video, x_hat, 0, d)
    real = video.clone().requires_grad_(True)
    logits_real = d(real)
    expected = hinge_d_loss(logits_real, d(x_hat.detach())) + 2.0 * r1_penalty(real, logits_real)
    assert d_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "lecam" not in d_stats and d_stats["r1"] > 0
    d_loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in d.parameters())

    off = TokenizerLoss(LossConfig(gan_start_step=0, adversarial_weight=0.0))
    loss, stats = off.generator_loss(video, x_hat, q, 10, RaisingDiscriminator())
    assert torch.equal(loss, (x_hat - video).square().mean() + q) and "g_adv" not in stats
    assert off.discriminator_loss(video, x_hat, 10, RaisingDiscriminator())[1] == {}


def test_adaptive_weight_is_the_gradient_norm_ratio():
    torch.manual_seed(0)
    last = nn.Conv3d(4, 3, 1)  # stands for the decoder's last layer
    h = torch.randn(2, 4, 3, 16, 16)
    video = _clip((2, 3, 3, 16, 16))
    d = _tiny_d()
    objective = TokenizerLoss(LossConfig(gan_start_step=0, adaptive_weight=True))
    x_hat = last(h)
    loss, stats = objective.generator_loss(video, x_hat, 0.0, 0, d, last_layer=last.weight)
    rec = (x_hat - video).square().mean()
    g_adv = ns_g_loss(d(x_hat))
    (g1,) = torch.autograd.grad(rec, last.weight, retain_graph=True)
    (g2,) = torch.autograd.grad(g_adv, last.weight, retain_graph=True)
    factor = (g1.norm() / (g2.norm() + 1e-4)).item()
    assert stats["adaptive_weight"] == pytest.approx(factor, rel=1e-5)
    assert loss.item() == pytest.approx((rec + 0.1 * factor * g_adv).item(), rel=1e-5)
    with pytest.raises(VistokError, match="last_layer"):
        objective.generator_loss(video, last(h), 0.0, 0, d)


def test_loss_config_and_input_errors():
    for bad in (
        dict(reconstruction="l3"),
        dict(gan_loss="wgan"),
        dict(perceptual_weight=-1.0),
        dict(gan_start_step=-1),
        dict(lecam_decay=1.0),
        dict(perceptual_frames=0),
    ):
        with pytest.raises(VistokError):
            LossConfig(**bad)
    objective = TokenizerLoss(LossConfig(gan_start_step=0))
    with pytest.raises(VistokError, match="same shape"):
        objective.generator_loss(torch.zeros(1, 3, 2, 16, 16), torch.zeros(1, 3, 3, 16, 16), 0.0, 0)
    with pytest.raises(VistokError, match="discriminator"):
        objective.discriminator_loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16), 0, None)
    with pytest.raises(VistokError, match="perceptual"):
        TokenizerLoss(perceptual=nn.Identity())


def test_ms_ssim_term_matches_the_metric_and_has_finite_gradients():
    from vistok.metrics.quality import ms_ssim

    torch.manual_seed(0)
    video = torch.rand(2, 3, 5, 48, 48) * 2 - 1
    x_hat = (video + 0.3 * torch.randn_like(video)).clamp(-1, 1)
    x_hat[0] = -video[0]  # anti-correlated: per-scale terms clamp to the floor, gradients stay finite
    x_hat.requires_grad_(True)
    objective = TokenizerLoss(LossConfig(ms_ssim_weight=0.5, adversarial_weight=0.0))
    loss, stats = objective.generator_loss(video, x_hat, 0.0, 0)
    expect = (x_hat - video).square().mean() + 0.5 * (1 - ms_ssim(video, x_hat.detach()).mean())
    torch.testing.assert_close(loss.detach(), expect, rtol=1e-5, atol=1e-6)
    assert stats["ms_ssim_loss"] == pytest.approx(1 - ms_ssim(video, x_hat.detach()).mean().item(), abs=1e-5)
    loss.backward()
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    small = TokenizerLoss(LossConfig(ms_ssim_weight=0.5, adversarial_weight=0.0))  # 8x8 frames: term skipped
    v8 = video[..., :8, :8]
    loss8, stats8 = small.generator_loss(v8, v8 * 0.5, 0.0, 0)
    assert "ms_ssim_loss" not in stats8 and torch.equal(loss8, (v8 * 0.5 - v8).square().mean())
    with pytest.raises(VistokError, match="ms_ssim_weight"):
        LossConfig(ms_ssim_weight=-1.0)
