"""VQ, FSQ and KL bottlenecks: exactness against brute force and hand computations, round trips,
gradients, codebook maintenance (EMA, dead-code restarts, distributed statistics), bad input.

Run as a script (``python tests/test_quantizers_vq_fsq_kl.py --worker RANK WORLD INIT_FILE OUT``) this
file is the per-rank worker of :func:`test_vq_statistics_across_two_ranks`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from vistok.quantizers import FSQ, KL, LFQ, VQ, QuantizerOutput

TRAILING = [(7,), (3, 4), (2, 3, 4)]  # (b d n), (b d h w), (b d t h w)
TRAILING_IDS = ["bdn", "bdhw", "bdthw"]

VQ_CONFIGS = {
    "euclid-ema": {},
    "cosine-ema": {"l2_normalize": True},
    "projected-learned": {"codebook_dim": 3, "ema": False},
    "projected-cosine-learned": {"codebook_dim": 3, "l2_normalize": True, "ema": False},
    "projected-cosine-ema-restart": {"codebook_dim": 3, "l2_normalize": True, "dead_code_threshold": 0.9},
}


def tokens(latents: torch.Tensor) -> torch.Tensor:
    """``(b, d, ...)`` -> ``(n, d)`` in the order quantizers flatten positions."""
    return latents.movedim(1, -1).reshape(-1, latents.shape[1])


def codebook_space(q: VQ, latents: torch.Tensor) -> torch.Tensor:
    """The test's own projection + normalization of latents, written out by hand."""
    z = tokens(latents).double()
    if q.project_in is not None:
        z = z @ q.project_in.weight.double().T + q.project_in.bias.double()
    if q.l2_normalize:
        z = z / z.norm(dim=-1, keepdim=True)
    return z


def set_codebook(q: VQ, codebook: torch.Tensor) -> None:
    with torch.no_grad():
        q.codebook.copy_(codebook)
        if q.ema:
            q.embed_sum.copy_(codebook)
        q.cluster_size.fill_(1.0)


# ------------------------------------------------------------------------------------------------
# VQ
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trailing", TRAILING, ids=TRAILING_IDS)
@pytest.mark.parametrize("config", list(VQ_CONFIGS), ids=list(VQ_CONFIGS))
def test_vq_index_code_round_trip(config, trailing):
    torch.manual_seed(0)
    q = VQ(5, 16, **VQ_CONFIGS[config])
    latents = torch.randn(2, 5, *trailing)
    q.train()
    for _ in range(2):  # move the codebook away from its initialization (EMA, restarts)
        q(torch.randn(2, 5, *trailing))
    q.eval()
    out = q(latents)
    assert isinstance(out, QuantizerOutput)
    assert out.codes.shape == latents.shape and out.codes.dtype == latents.dtype
    assert out.indices.shape == (2, *trailing) and out.indices.dtype == torch.int64
    assert 0 <= int(out.indices.min()) and int(out.indices.max()) < 16
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    codes, indices = q.quantize(latents)
    assert torch.equal(indices, out.indices) and torch.equal(codes, out.codes)
    # Codes decoded from the same index are the same vector at every position.
    flat_codes, flat_idx = tokens(out.codes), out.indices.reshape(-1)
    for k in flat_idx.unique():
        rows = flat_codes[flat_idx == k]
        assert torch.equal(rows, rows[:1].expand_as(rows))


@pytest.mark.parametrize("config", ["euclid", "cosine", "projected-euclid", "projected-cosine"])
def test_vq_nearest_neighbour_equals_brute_force_argmin(config):
    torch.manual_seed(1)
    kwargs = {"l2_normalize": "cosine" in config}
    if "projected" in config:
        kwargs["codebook_dim"] = 3
    # chunk_tokens=5 with 2*3*7 = 42 tokens: several blocks and a ragged last one.
    q = VQ(4, 37, chunk_tokens=5, **kwargs).eval()
    latents = torch.randn(2, 4, 3, 7, dtype=torch.float64)
    out = q(latents)
    z = codebook_space(q, latents)
    codebook = q.effective_codebook(torch.float64)
    if q.l2_normalize:
        reference = (z @ codebook.T).argmax(dim=-1)
    else:
        reference = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1).argmin(dim=-1)
    assert torch.equal(out.indices.reshape(-1), reference)
    # The same indices with one block, and in float32 with the default block size.
    assert torch.equal(VQ.nearest(q, z, codebook), reference)
    q.chunk_tokens = 1000
    assert torch.equal(q(latents).indices.reshape(-1), reference)
    if "projected" not in config:
        torch.testing.assert_close(tokens(out.codes), codebook[reference], rtol=0, atol=0)


def test_vq_search_is_exact_in_float32_and_under_bf16_autocast():
    torch.manual_seed(2)
    q = VQ(6, 64, codebook_dim=4, chunk_tokens=7).eval()
    latents = torch.randn(3, 6, 5, 5)
    out = q(latents)
    z = codebook_space(q, latents)
    codebook = q.effective_codebook(torch.float64)
    distances = ((z[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)
    chosen = distances.gather(1, out.indices.reshape(-1, 1)).squeeze(1)
    # float32 search: the chosen code is a nearest one up to float32 rounding of the distances.
    assert (chosen - distances.min(dim=1).values).max() < 1e-5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = q(latents)
    assert torch.equal(auto.indices, out.indices)
    assert auto.codes.dtype == torch.float32 and torch.equal(auto.codes, out.codes)
    # bf16 latents: distances in float32 of the (exactly representable) bf16 values.
    low = latents.bfloat16()
    out_low = q(low)
    assert out_low.codes.dtype == torch.bfloat16
    assert torch.equal(out_low.indices, q(low.float()).indices)
    assert torch.equal(q.indices_to_codes(out_low.indices, dtype=torch.bfloat16), out_low.codes)


@pytest.mark.parametrize("ema", [True, False])
def test_vq_l2_normalized_codes_have_unit_norm(ema):
    torch.manual_seed(3)
    q = VQ(4, 16, l2_normalize=True, ema=ema).train()
    opt = torch.optim.SGD(q.parameters(), lr=0.5) if not ema else None
    for _ in range(3):
        out = q(torch.randn(2, 4, 5, 5) * 3 + 1)
        if opt is not None:
            out.loss.backward()
            opt.step()
            opt.zero_grad()
    q.eval()
    out = q(torch.randn(2, 4, 5, 5) * 3)
    norms = out.codes.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6)
    cb_norms = q.effective_codebook().norm(dim=-1)
    torch.testing.assert_close(cb_norms, torch.ones_like(cb_norms), rtol=0, atol=1e-6)
    # The commitment loss is measured between unit vectors: at most ||a - b||^2 / d <= 4 / d.
    assert 0 < out.commitment_loss.item() <= 4 / 4


def test_vq_ema_update_matches_hand_computation():
    decay, eps = 0.8, 1e-3
    q = VQ(3, 4, decay=decay, epsilon=eps).train()
    old = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    set_codebook(q, old)
    # Five tokens near code 0, three near code 1, none near codes 2 and 3.
    near0 = torch.tensor([[1.0, 1, 0], [-1, 0, 1], [0, 2, 1], [1, -1, -1], [2, 0, 1]])
    near1 = torch.tensor([[9.0, 1, 0], [11, -1, 1], [10, 0, 2]])
    z = torch.cat([near0, near1]).double()  # (8, 3)
    latents = z.T.reshape(1, 3, 8)  # (b d n), token n = z[n]
    out = q(latents)
    assert out.indices.reshape(-1).tolist() == [0] * 5 + [1] * 3
    # The codes returned are the codebook *before* this step's update.
    torch.testing.assert_close(tokens(out.codes), old.double()[out.indices.reshape(-1)], rtol=0, atol=0)

    counts = torch.tensor([5.0, 3, 0, 0], dtype=torch.float64)
    sums = torch.stack([near0.sum(0), near1.sum(0), torch.zeros(3), torch.zeros(3)]).double()
    cluster = decay * 1.0 + (1 - decay) * counts
    embed_sum = decay * old.double() + (1 - decay) * sums
    total = cluster.sum()
    smoothed = (cluster + eps) / (total + 4 * eps) * total
    expected = embed_sum / smoothed[:, None]
    torch.testing.assert_close(q.cluster_size.double(), cluster, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(q.embed_sum.double(), embed_sum, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(q.codebook.double(), expected, rtol=1e-6, atol=1e-6)

    # Read as VQ-VAE's EMA (appendix A.1): a used code moves from its old value towards the mean m
    # of its n tokens by the fraction (1 - d) n / (d + (1 - d) n); the Laplace smoothing only
    # perturbs that by O(eps).
    for k, block in [(0, near0), (1, near1)]:
        n, mean = block.shape[0], block.double().mean(0)
        frac = (1 - decay) * n / (decay + (1 - decay) * n)
        torch.testing.assert_close(q.codebook[k].double(), old[k].double() + frac * (mean - old[k]), rtol=0, atol=5e-3)
    # Unused codes stay (almost) where they were.
    torch.testing.assert_close(q.codebook[2:].double(), old[2:].double(), rtol=0, atol=0.05)

    # Evaluation mode updates nothing.
    state = {k: v.clone() for k, v in q.state_dict().items()}
    q.eval()
    q(latents)
    for k, v in q.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_vq_learned_codebook_tracks_usage_but_not_codes():
    q = VQ(3, 4, ema=False, decay=0.5).train()
    old = torch.tensor([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    set_codebook(q, old)
    q(torch.tensor([[0.1, 0, 0], [9, 0, 0], [0.2, 0, 0]]).T.reshape(1, 3, 3))
    torch.testing.assert_close(q.cluster_size, torch.tensor([0.5 + 0.5 * 2, 0.5 + 0.5, 0.5, 0.5]))
    assert torch.equal(q.codebook.detach(), old)  # only the optimizer moves a learned codebook


@pytest.mark.parametrize("ema", [True, False])
def test_vq_dead_code_restart_replaces_unused_code(ema):
    torch.manual_seed(4)
    q = VQ(3, 4, ema=ema, decay=0.5, dead_code_threshold=0.6).train()
    far = torch.tensor([100.0, 100, 100])
    set_codebook(q, torch.stack([torch.zeros(3), torch.tensor([5.0, 0, 0]), torch.tensor([0.0, 5, 0]), far]))
    centres = q.codebook[:3].clone()

    def batch():
        # Tokens near codes 0-2 only; code 3 is never the nearest.
        which = torch.arange(12) % 3
        return (centres[which] + 0.3 * torch.randn(12, 3)).T.reshape(1, 3, 12)

    out1 = q(batch())  # every code starts with usage 1 >= 0.6: nothing is dead yet
    assert out1.stats["codes_restarted"].item() == 0 and 3 not in out1.indices
    assert q.cluster_size[3].item() == pytest.approx(0.5)  # 0.5 * 1 + 0.5 * 0 < 0.6: dead now
    assert out1.stats["dead_codes"].item() == 1

    latents = batch()
    before = q.codebook.detach().clone()
    out2 = q(latents)
    assert out2.stats["codes_restarted"].item() == 1
    assert 3 in out2.indices  # the restarted code wins at least the token it was copied from
    # It restarted with usage at the threshold, then this step's EMA counted its tokens.
    won_count = (out2.indices == 3).sum().item()
    assert q.cluster_size[3].item() == pytest.approx(0.5 * 0.6 + 0.5 * won_count)
    z = tokens(latents)
    if not ema:
        # Learned codebook: the restart is the only change, and code 3 is now one of the latents.
        assert (z - q.codebook[3].detach()).abs().sum(-1).min().item() == 0.0
        assert torch.equal(q.codebook[:3].detach(), before[:3])
    else:
        # EMA: then the step's update moves it to the mean of the tokens it won.
        won = z[out2.indices.reshape(-1) == 3]
        assert (q.codebook[3] - far).norm() > 100
        assert (q.codebook[3] - won.mean(0)).norm() < 1.0
    # Restarts happen in training only.
    q.eval()
    with torch.no_grad():
        q.cluster_size[2] = 0.0
    snapshot = q.codebook.detach().clone()
    q(batch())
    assert torch.equal(q.codebook.detach(), snapshot)


@pytest.mark.parametrize("ema", [True, False])
def test_vq_straight_through_gradient_is_identity(ema):
    torch.manual_seed(5)
    q = VQ(4, 16, ema=ema).train()
    latents = torch.randn(2, 4, 3, 5, requires_grad=True)
    out = q(latents)
    out.codes.sum().backward()
    torch.testing.assert_close(latents.grad, torch.ones_like(latents), rtol=0, atol=0)
    # The decoder's gradient reaches the encoder only, never the codebook (VQ-VAE eq. 3).
    if not ema:
        assert q.codebook.grad is None or not q.codebook.grad.any()


def test_vq_learned_codebook_gets_exact_codebook_gradient():
    torch.manual_seed(6)
    q = VQ(4, 16, ema=False, commitment_weight=0.25, codebook_weight=0.7).train()
    latents = torch.randn(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    out = q(latents)
    z = tokens(latents.detach())
    idx = out.indices.reshape(-1)
    cb = q.codebook.detach().double()
    n, c = z.shape
    commitment = ((z - cb[idx]) ** 2).mean()
    torch.testing.assert_close(out.commitment_loss, commitment)
    torch.testing.assert_close(out.loss, (0.25 + 0.7) * commitment)  # both terms have the same value
    out.loss.backward()
    # d/de_k of 0.7 * mean((sg(z) - e_idx)^2) = 0.7 * 2 * sum_{tokens of k} (e_k - z_n) / (n c).
    expected = torch.zeros_like(cb).index_add_(0, idx, cb[idx] - z) * (0.7 * 2 / (n * c))
    torch.testing.assert_close(q.codebook.grad.double(), expected, rtol=1e-5, atol=1e-7)
    unused = torch.ones(16, dtype=torch.bool)
    unused[idx] = False
    assert unused.any() and not q.codebook.grad[unused].any()
    # The encoder gets the commitment gradient (plus the straight-through path, absent here).
    torch.testing.assert_close(latents.grad, tokens_back(0.25 * 2 * (z - cb[idx]) / (n * c), latents.shape))


def tokens_back(flat: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`tokens`."""
    return flat.reshape(shape[0], *shape[2:], shape[1]).movedim(-1, 1)


def test_vq_ema_codebook_is_not_a_parameter_and_projections_are():
    assert list(VQ(4, 16).parameters()) == []
    names = {name for name, _ in VQ(4, 16, codebook_dim=2).named_parameters()}
    assert names == {"project_in.weight", "project_in.bias", "project_out.weight", "project_out.bias"}
    assert {name for name, _ in VQ(4, 16, ema=False).named_parameters()} == {"codebook"}


def test_vq_perplexity_and_usage_match_hand_computation():
    q = VQ(2, 8).eval()
    set_codebook(q, torch.arange(16, dtype=torch.float32).reshape(8, 2) * 3)
    used = torch.tensor([0, 0, 0, 1, 2, 2])
    latents = q.codebook[used].T.reshape(1, 2, 6)
    out = q(latents)
    assert out.indices.reshape(-1).tolist() == used.tolist()
    p = torch.tensor([3, 1, 2]) / 6
    assert out.stats["perplexity"].item() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-6)
    assert out.stats["batch_usage"].item() == pytest.approx(3 / 6)  # 3 codes of min(8, 6) possible
    assert out.stats["codes_used"].item() == 3
    assert out.commitment_loss.item() == 0 and out.loss.item() == 0


def test_vq_state_dict_round_trip():
    torch.manual_seed(7)
    q = VQ(4, 16, codebook_dim=3, l2_normalize=True).train()
    q(torch.randn(2, 4, 6))
    fresh = VQ(4, 16, codebook_dim=3, l2_normalize=True)
    fresh.load_state_dict(q.state_dict())
    latents = torch.randn(2, 4, 3, 3)
    a, b = q.eval()(latents), fresh.eval()(latents)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.codes, b.codes)


# ------------------------------------------------------------------------------------------------
# FSQ
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trailing", TRAILING, ids=TRAILING_IDS)
@pytest.mark.parametrize("levels", [(8, 5, 5, 5), (2, 3, 4), (7,)])
def test_fsq_index_code_round_trip(levels, trailing):
    torch.manual_seed(8)
    q = FSQ(levels)
    latents = torch.randn(2, len(levels), *trailing) * 2
    out = q(latents)
    assert out.codes.shape == latents.shape and out.indices.shape == (2, *trailing)
    assert torch.equal(q.indices_to_codes(out.indices), out.codes)
    codes, indices = q.quantize(latents)
    assert torch.equal(codes, out.codes) and torch.equal(indices, out.indices)
    assert out.loss.item() == 0 and out.commitment_loss.item() == 0


def test_fsq_is_a_bijection_between_indices_and_the_grid():
    levels = (3, 4, 2, 5)
    q = FSQ(levels)
    size = math.prod(levels)
    assert q.codebook_size == size == 120 and q.dim == q.code_dim == 4
    all_indices = torch.arange(size).reshape(1, size)
    grid = q.indices_to_codes(all_indices, dtype=torch.float64)  # (1, d, size)
    rows = tokens(grid)
    assert torch.unique(rows, dim=0).shape[0] == size  # distinct codes for distinct indices
    for i, level in enumerate(levels):
        # Channel i takes exactly its L values, a uniform grid on [-1, 1].
        torch.testing.assert_close(rows[:, i].unique(), torch.linspace(-1, 1, level, dtype=torch.float64))
    # Latents whose tanh is (just inside) each grid point quantize back to that very index.
    shrink = 1 - 0.1 / max((v - 1) / 2 for v in levels)
    out = q(torch.atanh(grid * shrink))
    assert torch.equal(out.indices, all_indices)
    assert torch.equal(out.codes, grid)


def test_fsq_mixed_radix_index_by_hand():
    q = FSQ((8, 5, 5, 5))
    digits = [7, 0, 4, 2]
    # digit k of a channel with L levels is the code k / h - 1, h = (L - 1) / 2.
    code = torch.tensor([k / ((v - 1) / 2) - 1 for k, v in zip(digits, q.levels)], dtype=torch.float64)
    latents = torch.atanh(code * 0.97).reshape(1, 4, 1)
    out = q(latents)
    assert out.indices.item() == 7 + 0 * 8 + 4 * 8 * 5 + 2 * 8 * 5 * 5
    torch.testing.assert_close(out.codes.reshape(4), code, rtol=0, atol=0)


def test_fsq_index_range_and_saturation():
    torch.manual_seed(9)
    levels = (8, 5, 5, 5)
    q = FSQ(levels)
    latents = torch.randn(4, 4, 30, 30) * 3
    latents[0, :, 0, 0] = 1e4  # tanh saturates to exactly +1 ...
    latents[0, :, 0, 1] = -1e4  # ... and -1
    out = q(latents)
    assert 0 <= int(out.indices.min()) and int(out.indices.max()) < q.codebook_size
    assert out.indices[0, 0, 0].item() == q.codebook_size - 1 and out.indices[0, 0, 1].item() == 0
    # Every digit value of every channel occurs.
    idx = out.indices.reshape(-1)
    for i, level in enumerate(levels):
        digit = (idx // math.prod(levels[:i])) % level
        assert set(digit.tolist()) == set(range(level))
    assert out.codes.abs().max().item() == 1.0


def test_fsq_code_is_nearest_grid_point_to_bounded_latent():
    torch.manual_seed(10)
    q = FSQ((4, 3, 5))
    grid = tokens(q.indices_to_codes(torch.arange(q.codebook_size).reshape(1, -1), dtype=torch.float64))
    latents = torch.randn(2, 3, 50, dtype=torch.float64)
    out = q(latents)
    bounded = torch.tanh(tokens(latents))
    reference = ((bounded[:, None, :] - grid[None]) ** 2).sum(-1).argmin(-1)
    assert torch.equal(out.indices.reshape(-1), reference)


def test_fsq_gradient_is_that_of_the_tanh_bound():
    torch.manual_seed(11)
    latents = torch.randn(2, 4, 3, 3, requires_grad=True)
    FSQ((8, 5, 5, 5))(latents).codes.sum().backward()
    torch.testing.assert_close(latents.grad, 1 - torch.tanh(latents.detach()) ** 2)


def test_fsq_with_two_levels_is_lfq():
    torch.manual_seed(12)
    latents = torch.randn(3, 6, 4, 4)
    fsq, lfq = FSQ((2,) * 6)(latents), LFQ(6)(latents)
    assert torch.equal(fsq.indices, lfq.indices) and torch.equal(fsq.codes, lfq.codes)


def test_fsq_usage_stats():
    q = FSQ((3, 3))
    codes = q.indices_to_codes(torch.tensor([[0, 0, 4, 8]]), dtype=torch.float64)
    out = q(torch.atanh(codes * 0.9))
    assert out.indices.tolist() == [[0, 0, 4, 8]]
    p = torch.tensor([0.5, 0.25, 0.25])
    assert out.stats["perplexity"].item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert out.stats["batch_usage"].item() == pytest.approx(3 / 4)


# ------------------------------------------------------------------------------------------------
# KL
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trailing", TRAILING, ids=TRAILING_IDS)
def test_kl_eval_is_deterministic_and_the_mean(trailing):
    torch.manual_seed(13)
    q = KL(3).eval()
    assert q.dim == 6 and q.code_dim == 3 and q.codebook_size is None
    latents = torch.randn(2, 6, *trailing)
    a, b = q(latents), q(latents)
    assert a.indices is None
    assert a.codes.shape == (2, 3, *trailing)
    assert torch.equal(a.codes, latents[:, :3]) and torch.equal(a.codes, b.codes)
    codes, indices = q.quantize(latents)
    assert indices is None and torch.equal(codes, a.codes)


def test_kl_training_samples_with_reparameterization():
    torch.manual_seed(14)
    q = KL(4).train()
    latents = torch.randn(2, 8, 5, 5, requires_grad=True)
    mean, logvar = latents.detach()[:, :4], latents.detach()[:, 4:]
    torch.manual_seed(99)
    out = q(latents)
    torch.manual_seed(99)
    noise = torch.randn(mean.shape)
    torch.testing.assert_close(out.codes, mean + torch.exp(0.5 * logvar) * noise, rtol=1e-6, atol=1e-6)
    assert not torch.equal(out.codes, mean)
    # Gradients of the sample: identity w.r.t. the mean, (1/2) std * noise w.r.t. the log-variance.
    out.codes.sum().backward()
    torch.testing.assert_close(latents.grad[:, :4], torch.ones_like(mean))
    torch.testing.assert_close(latents.grad[:, 4:], 0.5 * torch.exp(0.5 * logvar) * noise)
    # sample_posterior=False: the mean in training too.
    assert torch.equal(KL(4, sample_posterior=False).train()(latents.detach()).codes, mean)


def test_kl_value_against_closed_form_reference():
    torch.manual_seed(15)
    q = KL(3, kl_weight=0.01).train()
    latents = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    latents[0, 3:, 0, 0] = 100.0  # clamped to logvar 20
    latents[1, 3:, 0, 0] = -100.0  # clamped to logvar -30
    out = q(latents)
    mean = latents[:, :3]
    logvar = latents[:, 3:].clamp(-30, 20)
    posterior = torch.distributions.Normal(mean, torch.exp(0.5 * logvar))
    prior = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    reference = torch.distributions.kl_divergence(posterior, prior).mean()
    torch.testing.assert_close(out.stats["kl"], reference, rtol=1e-10, atol=0)
    torch.testing.assert_close(out.loss, 0.01 * reference, rtol=1e-10, atol=0)
    assert out.commitment_loss.item() == 0
    # Zero exactly at the prior.
    standard = torch.cat([torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)], dim=1)
    assert q(standard).stats["kl"].item() == 0.0


def test_kl_has_no_indices():
    with pytest.raises(ValueError, match="no indices"):
        KL(2).indices_to_codes(torch.zeros(1, 3, dtype=torch.long))


# ------------------------------------------------------------------------------------------------
# Shared: attributes and bad input
# ------------------------------------------------------------------------------------------------


def test_code_dim_attributes():
    assert VQ(5, 8).code_dim == 5 and VQ(5, 8, codebook_dim=2).code_dim == 5
    assert FSQ((8, 5, 5)).code_dim == 3 and LFQ(7).code_dim == 7
    q = KL(4)
    assert (q.dim, q.code_dim) == (8, 4)


@pytest.mark.parametrize(
    "make",
    [
        lambda: VQ(0),
        lambda: VQ(4.0),
        lambda: VQ(4, 0),
        lambda: VQ(4, 16, codebook_dim=0),
        lambda: VQ(4, decay=1.0),
        lambda: VQ(4, decay=-0.1),
        lambda: VQ(4, epsilon=0.0),
        lambda: VQ(4, commitment_weight=-1.0),
        lambda: VQ(4, codebook_weight=-1.0),
        lambda: VQ(4, dead_code_threshold=-1.0),
        lambda: VQ(4, chunk_tokens=0),
        lambda: VQ(4, sync_distributed="yes"),
        lambda: FSQ(()),
        lambda: FSQ((1, 5)),
        lambda: FSQ((2.5, 3)),
        lambda: FSQ((True, 3)),
        lambda: FSQ("85"),
        lambda: FSQ(8),
        lambda: KL(0),
        lambda: KL(4, kl_weight=-1.0),
        lambda: KL(4, logvar_range=(1.0, 0.0)),
        lambda: KL(4, logvar_range=3.0),
    ],
)
def test_bad_arguments_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_wrong_input_raises_value_error():
    vq, fsq, kl = VQ(4, 16), FSQ((8, 5)), KL(4)
    with pytest.raises(ValueError, match="4 channels"):
        vq(torch.randn(2, 5, 3))
    with pytest.raises(ValueError):
        vq(torch.randn(4))
    with pytest.raises(ValueError, match="floating-point"):
        vq(torch.ones(2, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="2 channels"):
        fsq(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="8 channels"):  # mean and log-variance: 2 * 4
        kl(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="8 channels"):
        kl.quantize(torch.randn(2, 4, 3))
    for q in (vq, fsq):
        with pytest.raises(ValueError, match="must lie in"):
            q.indices_to_codes(torch.tensor([[0, q.codebook_size]]))
        with pytest.raises(ValueError, match="must lie in"):
            q.indices_to_codes(torch.tensor([[-1, 0]]))
        with pytest.raises(ValueError, match="integer"):
            q.indices_to_codes(torch.zeros(1, 2))


# ------------------------------------------------------------------------------------------------
# Distributed codebook statistics (two gloo ranks on CPU)
# ------------------------------------------------------------------------------------------------

WORLD = 2
DIST_SHAPE = (4, 3, 4, 5)  # full batch (b d h w); each rank holds half
DIST_TIMEOUT_S = 120


def dist_batch() -> torch.Tensor:
    return torch.randn(DIST_SHAPE, generator=torch.Generator().manual_seed(1234), dtype=torch.float64)


def dist_vq(ema: bool, sync) -> VQ:
    torch.manual_seed(0)  # the same initial codebook on every rank (DDP would broadcast it)
    # decay 0.9 and threshold 0.95: no code is dead at step 1 (usage starts at 1); every code
    # unused at step 1 has usage 0.9 afterwards and is restarted at step 2.
    return VQ(3, 24, ema=ema, decay=0.9, dead_code_threshold=0.95, sync_distributed=sync).train()


def run_dist_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    full = dist_batch()
    local = full.chunk(world)[rank]
    result: dict[str, object] = {"world": dist.get_world_size()}
    for ema in (True, False):
        q = dist_vq(ema, "auto")
        out = q(local)  # step 1: EMA statistics of the global batch
        result[f"ema{ema}_step1_codebook"] = q.codebook.detach().double().tolist()
        result[f"ema{ema}_step1_cluster_size"] = q.cluster_size.double().tolist()
        result[f"ema{ema}_step1_perplexity"] = out.stats["perplexity"].item()
        # Step 2: restarts. Different random states per rank: only the broadcast from rank 0
        # keeps the codebooks identical.
        torch.manual_seed(100 + rank)
        out2 = q(local)
        result[f"ema{ema}_step2_restarted"] = out2.stats["codes_restarted"].item()
        result[f"ema{ema}_step2_codebook"] = q.codebook.detach().double().tolist()
        result[f"ema{ema}_step2_cluster_size"] = q.cluster_size.double().tolist()
        if rank == 0:
            result[f"ema{ema}_rank0_tokens"] = tokens(local).tolist()
    # "auto" in evaluation mode: local statistics only.
    result["eval_perplexity"] = dist_vq(True, "auto").eval()(local).stats["perplexity"].item()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_vq_statistics_across_two_ranks(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    init_file = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(rank), str(WORLD), str(init_file), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # on timeout, kill each worker with whatever it started
        )
        for rank in range(WORLD)
    ]
    outputs = []
    for proc in procs:
        try:
            outputs.append(proc.communicate(timeout=DIST_TIMEOUT_S)[0])
        except subprocess.TimeoutExpired:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
            pytest.fail(f"distributed VQ workers did not finish within {DIST_TIMEOUT_S} s")
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-4000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [r["world"] for r in results] == [WORLD] * WORLD

    full = dist_batch()
    halves = full.chunk(WORLD)
    for ema in (True, False):
        reference = dist_vq(ema, False)
        ref_out = reference(full)  # one process, the whole batch
        for rank, r in enumerate(results):
            # Step 1: every rank applied the EMA update of the global batch.
            codebook = torch.tensor(r[f"ema{ema}_step1_codebook"], dtype=torch.float64)
            cluster_size = torch.tensor(r[f"ema{ema}_step1_cluster_size"], dtype=torch.float64)
            torch.testing.assert_close(codebook, reference.codebook.detach().double(), rtol=0, atol=1e-6)
            torch.testing.assert_close(cluster_size, reference.cluster_size.double(), rtol=0, atol=1e-6)
            assert r[f"ema{ema}_step1_perplexity"] == pytest.approx(ref_out.stats["perplexity"].item(), rel=1e-6)
            assert r[f"ema{ema}_step2_restarted"] > 0
        # Step 2: the ranks restarted the same codes with the same (rank 0's) latents.
        a, b = (torch.tensor(r[f"ema{ema}_step2_codebook"]) for r in results)
        assert torch.equal(a, b)
        assert results[0][f"ema{ema}_step2_cluster_size"] == results[1][f"ema{ema}_step2_cluster_size"]
        if not ema:
            dead = torch.tensor(results[0]["emaFalse_step1_cluster_size"]) < 0.95
            rank0 = torch.tensor(results[0]["emaFalse_rank0_tokens"])
            for row in a[dead]:
                assert (rank0 - row).abs().sum(-1).min().item() < 1e-6
    local = [dist_vq(True, False).eval()(h).stats["perplexity"].item() for h in halves]
    for rank, r in enumerate(results):
        assert r["eval_perplexity"] == pytest.approx(local[rank], rel=1e-9)


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--worker":
    run_dist_worker(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
