"""Lookup-free quantization: exactness against brute force over all 2^K codes, round trips, gradients."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vistok.errors import VistokError
from vistok.quantizers import LFQ, EntropyWeightSchedule, join_indices, split_indices


def brute_force_entropies(latents: torch.Tensor, tau: float, scale: float = 1.0):
    """Per-sample and codebook entropy by enumerating every code c in {-s, +s}^K (float64)."""
    k = latents.shape[1]
    z = latents.double().movedim(1, -1).reshape(-1, k)  # (n, K)
    codes = torch.tensor(list(itertools.product([-scale, scale], repeat=k)), dtype=torch.float64)
    dist = torch.cdist(z, codes) ** 2  # (n, 2^K)
    p = torch.softmax(-dist / tau, dim=-1)
    per_sample = -(p * p.clamp_min(1e-300).log()).sum(-1).mean()
    mean = p.mean(0)
    codebook = -(mean * mean.clamp_min(1e-300).log()).sum()
    return per_sample, codebook


@pytest.mark.parametrize("bits", [1, 2, 5, 8, 11])
@pytest.mark.parametrize("tau", [0.01, 0.5, 3.0])
def test_entropies_exact_against_brute_force(bits, tau):
    torch.manual_seed(bits)
    latents = torch.randn(3, bits, 4, 5, dtype=torch.float64) * 0.3
    q = LFQ(bits=bits, entropy_temperature=tau)
    out = q(latents)
    ref_ps, ref_cb = brute_force_entropies(latents, tau)
    torch.testing.assert_close(out.per_sample_entropy, ref_ps, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out.codebook_entropy, ref_cb, rtol=1e-9, atol=1e-9)


def test_entropies_exact_with_code_scale_and_float32():
    torch.manual_seed(0)
    latents = torch.randn(2, 7, 3, 3, 3) * 0.2
    q = LFQ(bits=7, entropy_temperature=0.7, code_scale=0.5)
    out = q(latents)
    ref_ps, ref_cb = brute_force_entropies(latents, 0.7, scale=0.5)
    torch.testing.assert_close(out.per_sample_entropy.double(), ref_ps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.codebook_entropy.double(), ref_cb, rtol=1e-5, atol=1e-5)
    assert set(out.codes.unique().tolist()) <= {-0.5, 0.5}


def test_entropy_gradients_match_brute_force():
    torch.manual_seed(1)
    latents = torch.randn(2, 6, 5, dtype=torch.float64) * 0.4
    a = latents.clone().requires_grad_()
    b = latents.clone().requires_grad_()
    q = LFQ(bits=6, entropy_temperature=0.3)
    ps, cb = q.entropies(a)
    (ps - 2.0 * cb).backward()
    ref_ps, ref_cb = brute_force_entropies(b, 0.3)
    (ref_ps - 2.0 * ref_cb).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-10)


def test_codebook_entropy_at_2_18_is_finite_and_bounded():
    torch.manual_seed(0)
    latents = torch.randn(2, 18, 2, 8, 8, requires_grad=True)
    out = LFQ(bits=18)(latents)
    n = 2 * 2 * 8 * 8
    assert 0 <= out.per_sample_entropy.item() <= 18 * torch.log(torch.tensor(2.0)).item()
    # The mean of n distributions over 2^18 codes, each nearly one-hot at tau = 0.01.
    assert out.codebook_entropy.item() <= torch.log(torch.tensor(float(2**18))).item() + 1e-4
    assert out.codebook_entropy.item() > 0.9 * torch.log(torch.tensor(float(n))).item()
    out.loss.backward()
    assert torch.isfinite(latents.grad).all()


def test_indices_bits_follow_channel_signs():
    torch.manual_seed(0)
    latents = torch.randn(2, 10, 3, 4, 4)
    out = LFQ(bits=10)(latents)
    assert out.indices.dtype == torch.int64 and out.indices.shape == (2, 3, 4, 4)
    for d in range(10):
        bit = (out.indices >> d) & 1
        assert torch.equal(bit.bool(), latents[:, d] > 0)


@pytest.mark.parametrize("shape", [(2, 9), (2, 9, 7), (2, 9, 3, 4), (1, 9, 2, 3, 4)])
def test_index_code_round_trip_any_layout(shape):
    torch.manual_seed(0)
    q = LFQ(bits=9, code_scale=2.0)
    out = q(torch.randn(shape))
    assert out.codes.shape == shape
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    codes, indices = q.quantize(torch.randn(shape))
    assert torch.equal(q(q.indices_to_codes(indices)).indices, indices)


def test_straight_through_gradient_is_identity():
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    q = LFQ(bits=4)
    q(latents).codes.mul(torch.arange(4.0).view(1, 4, 1, 1)).sum().backward()
    assert torch.equal(latents.grad, torch.arange(4.0).view(1, 4, 1, 1).expand(2, 4, 3, 3))


def test_loss_is_weighted_sum_and_schedule_anneals():
    torch.manual_seed(0)
    q = LFQ(bits=5, commitment_weight=0.25, entropy_schedule=EntropyWeightSchedule(0.1, 3.0, 100))
    latents = torch.randn(2, 5, 6)
    out = q(latents)
    expect = 0.25 * out.commitment_loss + 0.3 * (out.per_sample_entropy - out.codebook_entropy)
    torch.testing.assert_close(out.loss, expect)
    torch.testing.assert_close(out.commitment_loss, ((latents - latents.sign()) ** 2).mean())
    q.step_schedule(50)
    assert q.entropy_weight_now == pytest.approx(0.2)
    q.step_schedule(10_000)
    assert q.entropy_weight_now == pytest.approx(0.1)


def test_entropy_penalty_spreads_usage():
    """Minimizing the penalty alone moves a collapsed batch onto many codes."""
    torch.manual_seed(0)
    latents = (torch.randn(256, 8) * 0.01 + 0.2).requires_grad_()  # all tokens on one code
    q = LFQ(bits=8, entropy_temperature=0.1, commitment_weight=0.0, entropy_schedule=EntropyWeightSchedule(1.0, 1.0, 0))
    opt = torch.optim.Adam([latents], lr=0.05)
    before = q(latents).indices.unique().numel()
    for _ in range(200):
        opt.zero_grad()
        q(latents).loss.backward()
        opt.step()
    after = q(latents)
    assert before <= 2
    assert after.indices.unique().numel() > 100
    assert after.codebook_entropy.item() > 4.5


@pytest.mark.parametrize(
    "kwargs",
    [dict(bits=0), dict(bits=-3), dict(bits=31), dict(bits=2.5), dict(bits=4, entropy_temperature=0.0), dict(bits=4, code_scale=-1.0)],
)
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        LFQ(**kwargs)


def test_wrong_channel_count_and_dtype_raise_value_error():
    q = LFQ(bits=6)
    with pytest.raises(ValueError, match="6 channels"):
        q(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="floating"):
        q(torch.ones(2, 6, 4, dtype=torch.long))
    with pytest.raises(ValueError):
        q.indices_to_codes(torch.tensor([64]))
    with pytest.raises(ValueError):
        q.indices_to_codes(torch.tensor([-1]))


@settings(max_examples=50, deadline=None)
@given(
    widths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
    seed=st.integers(0, 2**31 - 1),
)
def test_factorization_round_trip(widths, seed):
    total = sum(widths)
    g = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, 2**total, (3, 5), generator=g)
    parts = split_indices(indices, widths)
    for p, w in zip(parts, widths):
        assert p.min() >= 0 and p.max() < 2**w
    assert torch.equal(join_indices(parts, widths), indices)


def test_factorization_9_plus_9_matches_lfq_bits():
    torch.manual_seed(0)
    q = LFQ(bits=18)
    out = q(torch.randn(1, 18, 4, 4))
    low, high = split_indices(out.indices, (9, 9))
    codes = out.codes
    for d in range(9):
        assert torch.equal(((low >> d) & 1).bool(), codes[:, d] > 0)
        assert torch.equal(((high >> d) & 1).bool(), codes[:, 9 + d] > 0)
    with pytest.raises(ValueError):
        split_indices(out.indices, (9, 8))  # 18-bit ids do not fit in 17 bits


def test_bit_dropout_zeroes_low_channels_like_the_codec():
    """Training with bit dropout feeds the decoder exactly the codes the codec decodes after
    ``--drop-bits n``: the n least significant channels at 0, the others untouched."""
    torch.manual_seed(0)
    q = LFQ(bits=6, bit_dropout=0.9)
    latents = torch.randn(64, 6, 2, 3, 3)
    full, indices = q.quantize(latents)
    q.train()
    dropped = q(latents).codes.detach()
    zero = dropped == 0
    assert zero.any() and (~zero).all(dim=1).any()  # some samples dropped bits, some kept all
    for i in range(latents.shape[0]):
        n = int(zero[i].flatten(1).all(dim=1).sum())  # channels zeroed everywhere in sample i
        assert zero[i, :n].all() and not zero[i, n:].any()  # the n lowest channels, no others
        expect = q.indices_to_codes(indices[i : i + 1], kept_channels=range(n, 6))[0]  # what the codec decodes
        torch.testing.assert_close(dropped[i], expect)
    q.eval()  # evaluation and encoding never drop
    torch.testing.assert_close(q(latents).codes, full)


def test_bit_dropout_validation_and_identity():
    with pytest.raises(VistokError, match="bit_dropout"):
        LFQ(bits=4, bit_dropout=1.0)
    from vistok.tokenizers.magvit2 import Magvit2Config, Magvit2Tokenizer

    torch.manual_seed(0)
    a = Magvit2Tokenizer(Magvit2Config.preset("tiny"))
    b = Magvit2Tokenizer(Magvit2Config.preset("tiny", bit_dropout=0.5))
    b.load_state_dict(a.state_dict())
    assert a.model_id() == b.model_id()  # a training-only setting: same network, same identity
