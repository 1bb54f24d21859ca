"""Token language models: schedule, factorization, MaskGIT decoding, AR KV cache, guidance,
conditioning frames, overfitting a handful of grids, save/load and input errors."""

import math

import pytest
import torch

from vistok.errors import VistokError
from vistok.generate import (
    AutoregressiveTokenModel,
    MaskedTokenModel,
    TokenFactorization,
    build_lm,
    guide,
    lm_config,
    load_lm,
    mask_ratio,
    maskgit_decode,
)
from vistok.generate.schedule import SCHEDULES, num_masked_after_step, num_masked_for_training
from vistok.generate.tokens import FactorizedEmbedding, auto_num_subtokens, factorized_cross_entropy
from vistok.generate.transformer import Transformer


def tiny(kind="mlm", **kw):
    base = dict(kind=kind, vocab_size=2**10, num_subtokens=2, dim=32, depth=2, heads=4, num_classes=4,
                max_grid=(3, 4, 4), dropout=0.0)
    base.update(kw)
    return lm_config("lm-tiny", **base)


# -- schedule -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedule_endpoints_and_monotone(name):
    assert mask_ratio(0.0, name).item() == 1.0
    assert mask_ratio(1.0, name).item() == 0.0
    r = torch.linspace(0, 1, 1001)
    v = mask_ratio(r, name)
    assert bool((v[1:] <= v[:-1]).all()) and bool((v[1:-1] > 0).all()) and bool((v < 1).sum() == 1000)


def test_cosine_is_the_default_and_matches_its_formula():
    r = torch.rand(100, dtype=torch.float64)
    assert torch.allclose(mask_ratio(r), torch.cos(math.pi / 2 * r))


def test_training_mask_counts_in_range():
    r = torch.cat([torch.zeros(1), torch.ones(1), torch.rand(500)])
    k = num_masked_for_training(r, 37)
    assert int(k.min()) >= 1 and int(k.max()) <= 37
    assert k[0] == 37 and k[1] == 1  # everything at r = 0; at least one at r = 1


@pytest.mark.parametrize("steps", [1, 8, 12, 64])
def test_sampling_schedule_reaches_zero_and_never_grows(steps):
    n = torch.tensor([320, 7])
    counts = [num_masked_after_step(s, steps, n) for s in range(steps)]
    assert counts[-1].tolist() == [0, 0]
    for a, b in zip(counts, counts[1:]):
        assert bool((b <= a).all())
    with pytest.raises(VistokError):
        num_masked_after_step(steps, steps, n)


# -- factorization --------------------------------------------------------------------------------


def test_subtokens_round_trip_and_table_sizes():
    f = TokenFactorization(2**18, 2)
    assert f.sizes == (512, 512)
    idx = torch.randint(0, 2**18, (3, 5, 8, 8))
    parts = f.split(idx)
    assert all(int(p.max()) < 512 for p in parts)
    assert torch.equal(f.join(parts), idx)
    assert torch.equal(parts[0], idx & 511) and torch.equal(parts[1], idx >> 9)  # low bits first
    emb = FactorizedEmbedding(f, 8)
    assert [t.weight.shape[0] for t in emb.tables] == [513, 513]  # 512 values + the mask row
    odd = TokenFactorization(2**13, 2)
    assert odd.sizes == (128, 64)
    x = torch.randint(0, 2**13, (100,))
    assert torch.equal(odd.join(odd.split(x)), x)


def test_non_power_of_two_vocabulary_needs_one_subtoken():
    assert TokenFactorization(1000, 1).sizes == (1000,)
    with pytest.raises(VistokError, match="not a power of two"):
        TokenFactorization(1000, 2)
    assert auto_num_subtokens(1000) == 1 and auto_num_subtokens(2**10) == 1
    assert auto_num_subtokens(2**18) == 2 and auto_num_subtokens(2**13) == 1
    with pytest.raises(VistokError, match=r"\[0, 1000\)"):
        TokenFactorization(1000).check(torch.tensor([0, 1000]))


def test_masked_embedding_ignores_the_index():
    f = TokenFactorization(64, 2)
    emb = FactorizedEmbedding(f, 8)
    a, b = torch.tensor([[3, 5]]), torch.tensor([[60, 5]])
    mask = torch.tensor([[True, False]])
    assert torch.equal(emb(a, mask), emb(b, mask))
    assert torch.equal(emb(torch.tensor([[-1, 5]]), mask), emb(a, mask))  # a placeholder is fine too
    assert not torch.equal(emb(a), emb(b))


def test_factorized_loss_is_sum_of_heads_on_selected_positions():
    torch.manual_seed(0)
    logits = [torch.randn(2, 5, 4), torch.randn(2, 5, 8)]
    targets = [torch.randint(0, 4, (2, 5)), torch.randint(0, 8, (2, 5))]
    select = torch.tensor([[True, False, True, False, False], [False, False, False, True, True]])
    loss, _ = factorized_cross_entropy(logits, targets, select)
    ref = sum(torch.nn.functional.cross_entropy(lg[select], t[select]) for lg, t in zip(logits, targets))
    assert torch.allclose(loss, ref)


# -- transformer / KV cache -------------------------------------------------------------------------


def test_kv_cache_chunks_equal_full_causal_forward():
    torch.manual_seed(0)
    tr = Transformer(dim=16, depth=2, heads=2).eval()
    x = torch.randn(2, 9, 16)
    full = tr(x, causal=True)
    cache = tr.new_cache(2, 9, dtype=x.dtype, device=x.device)
    outs = [tr(x[:, a:b], causal=True, cache=cache) for a, b in [(0, 3), (3, 4), (4, 8), (8, 9)]]
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
    with pytest.raises(VistokError, match="KV cache"):
        tr(x[:, :1], causal=True, cache=cache)


@pytest.mark.parametrize("cfg_scale,given", [(0.0, False), (2.0, True)])
def test_ar_cached_sampling_gives_the_logits_of_a_full_forward(cfg_scale, given):
    torch.manual_seed(0)
    model = AutoregressiveTokenModel(tiny("ar", vocab_size=1000, num_subtokens=1)).eval()
    labels = torch.tensor([1, 3])
    g = torch.randint(0, 1000, (2, 1, 4, 4)) if given else None
    out = model.sample(labels, given=g, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(1), keep_logits=True)
    tokens = out.tokens
    assert tokens.shape == (2, 3, 4, 4)
    start = 16 if given else 0
    cond = model(tokens, labels)
    ref = guide(cond, model(tokens, torch.full_like(labels, model.null_class)), cfg_scale)
    for a, b in zip(out.logits, ref):
        assert torch.allclose(a, b[:, start:], atol=1e-4), (a - b[:, start:]).abs().max()


# -- sampling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab,sub", [(1000, 1), (2**18, 2), (2**10, 0)])
@pytest.mark.parametrize("kind", ["mlm", "ar"])
def test_sampling_fills_every_position_within_the_vocabulary(kind, vocab, sub):
    torch.manual_seed(0)
    model = build_lm(tiny(kind, vocab_size=vocab, num_subtokens=sub))
    kw = {"steps": 5} if kind == "mlm" else {}
    out = model.generate(torch.tensor([0, 2, 3]), grid=(2, 3, 4), temperature=3.0,
                         generator=torch.Generator().manual_seed(0), **kw)
    assert out.shape == (3, 2, 3, 4) and out.dtype == torch.int64
    assert int(out.min()) >= 0 and int(out.max()) < vocab
    assert len(out.unique()) > 10  # really sampled, not a constant fill
    if vocab == 1000:  # the head has exactly 1000 outputs: no invalid index can be drawn
        assert model.head.proj.out_features == 1000


def test_maskgit_reveals_tokens_by_the_schedule_and_keeps_them():
    f = TokenFactorization(16, 2)
    n, steps = 40, 8
    seen = []

    def logits_fn(tokens, mask):
        seen.append((tokens.clone(), mask.clone()))
        return [torch.randn(1, n, 4), torch.randn(1, n, 4)]

    torch.manual_seed(0)
    known = torch.zeros(1, n, dtype=torch.bool)
    out = maskgit_decode(logits_fn, torch.zeros(1, n, dtype=torch.long), known, f, steps=steps,
                         generator=torch.Generator().manual_seed(0))
    counts = [int(m.sum()) for _, m in seen]
    expected = [n] + [int(num_masked_after_step(s, steps, torch.tensor([n]))) for s in range(steps - 1)]
    assert counts == expected
    for (t0, m0), (t1, m1) in zip(seen, seen[1:]):  # revealed tokens are final
        assert torch.equal(t0[~m0], t1[~m0]) and bool((m1 <= m0).all())
    assert torch.equal(out[~seen[-1][1]], seen[-1][0][~seen[-1][1]])


def test_more_steps_than_tokens_still_fills_everything():
    model = MaskedTokenModel(tiny())
    out = model.generate(num_samples=2, grid=(1, 1, 3), steps=64, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 1, 1, 3)


@pytest.mark.parametrize("kind", ["mlm", "ar"])
def test_conditioning_frames_are_never_changed(kind):
    torch.manual_seed(0)
    model = build_lm(tiny(kind, frame_condition_prob=0.5))
    given = torch.randint(0, 2**10, (2, 2, 4, 4))
    out = model.generate(torch.tensor([1, 2]), given=given, cfg_scale=1.5, generator=torch.Generator().manual_seed(3))
    assert out.shape == (2, 3, 4, 4)
    assert torch.equal(out[:, :2], given)
    with pytest.raises(VistokError, match="given frames"):
        model.generate(torch.tensor([1, 2]), given=given[:, :, :3])
    with pytest.raises(VistokError, match="given frames"):
        model.generate(torch.tensor([1, 2]), given=torch.randint(0, 2**10, (2, 3, 4, 4)))  # nothing left


def test_maskgit_sampling_is_deterministic_given_the_generator():
    model = MaskedTokenModel(tiny())
    a = model.generate(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(5))
    b = model.generate(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(5))
    c = model.generate(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


# -- guidance ---------------------------------------------------------------------------------------


def test_guidance_formula():
    c, u = [torch.randn(2, 3, 4)], [torch.randn(2, 3, 4)]
    assert guide(c, u, 0.0)[0] is c[0]
    assert torch.allclose(guide(c, u, 1.5)[0], 2.5 * c[0] - 1.5 * u[0], atol=1e-6)


@pytest.mark.parametrize("kind", ["mlm", "ar"])
def test_cfg_zero_is_the_conditional_model_and_guidance_uses_the_null_class(kind):
    torch.manual_seed(0)
    model = build_lm(tiny(kind))
    labels = torch.tensor([0, 1, 2, 3])
    gen = lambda w: model.generate(labels, cfg_scale=w, generator=torch.Generator().manual_seed(0))  # noqa: E731
    base = gen(0.0)
    assert not torch.equal(base, gen(3.0))  # the unconditional branch moves the samples
    with torch.no_grad():  # make every class the null class: guidance must then change nothing
        model.class_embed.weight.copy_(model.class_embed.weight[-1:].expand_as(model.class_embed.weight))
    assert torch.equal(gen(0.0), gen(3.0))


# -- training batches ---------------------------------------------------------------------------------


def test_mlm_training_batch_masks_and_scores_the_same_positions():
    model = MaskedTokenModel(tiny(frame_condition_prob=1.0, frame_condition_frames=1, class_dropout=0.5))
    idx = torch.randint(0, 2**10, (64, 3, 4, 4))
    batch = model.training_batch(idx, torch.randint(0, 4, (64,)), torch.Generator().manual_seed(0))
    sel = batch.select
    assert torch.equal(batch.inputs["mask"].flatten(1), sel)
    assert bool((sel.sum(1) >= 1).all()) and bool((sel.sum(1) <= 32).all())
    assert not bool(sel[:, :16].any())  # the first latent frame is context, never masked
    assert 0 < int((batch.inputs["labels"] == model.null_class).sum()) < 64  # class dropout
    logits = model(**batch.inputs)
    loss, acc = factorized_cross_entropy(logits, batch.targets, sel)
    loss = loss.detach()
    assert torch.isfinite(loss) and 0 <= float(acc) <= 1
    assert math.isclose(float(loss), 2 * math.log(32), rel_tol=0.1)  # ~uniform over 2 heads of 32 at init


def test_ar_training_batch_scores_every_position():
    model = AutoregressiveTokenModel(tiny("ar"))
    idx = torch.randint(0, 2**10, (2, 3, 4, 4))
    batch = model.training_batch(idx, None, None)
    assert bool(batch.select.all()) and bool((batch.inputs["labels"] == model.null_class).all())


# -- overfitting a handful of grids -------------------------------------------------------------------


def _overfit(model, grids, labels, steps=400):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = model.training_batch(grids, labels, g)
        loss, _ = factorized_cross_entropy(model(**batch.inputs), batch.targets, batch.select)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


@pytest.mark.parametrize("kind,vocab,sub", [("mlm", 2**10, 2), ("ar", 1000, 1)])
def test_tiny_model_overfits_and_regenerates_each_grid_from_its_class(kind, vocab, sub):
    torch.manual_seed(0)
    model = build_lm(tiny(kind, vocab_size=vocab, num_subtokens=sub, dim=64, max_grid=(2, 4, 4), class_dropout=0.0))
    grids = torch.randint(0, vocab, (4, 2, 4, 4))
    labels = torch.arange(4)
    loss = _overfit(model, grids, labels, steps=300)
    assert loss < 0.05, loss
    # Each token is right with probability ~0.999 at temperature 1, so one of 4 x 32 tokens may
    # still miss; temperature 0.5 squares the odds (0 misses in 100 samples when tried).
    kw = {"steps": 8, "temperature": 0.5} if kind == "mlm" else {"temperature": 0.5}
    out = model.generate(labels, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(out, grids)
    out = model.generate(labels.flip(0), generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(out, grids.flip(0))


# -- persistence and errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["mlm", "ar"])
def test_save_and_load_round_trip(kind, tmp_path):
    model = build_lm(tiny(kind, tokenizer_id="abc123", class_names=["a", "b", "c", "d"]))
    model.save_pretrained(tmp_path / "lm")
    loaded = load_lm(tmp_path / "lm")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.config.tokenizer_id == "abc123" and loaded.config.max_grid == (3, 4, 4)
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(VistokError, match="not a saved token language model"):
        load_lm(tmp_path)


def test_clear_errors_for_bad_input():
    model = MaskedTokenModel(tiny())
    with pytest.raises(VistokError, match=r"class labels must lie in \[0, 4\)"):
        model.generate(torch.tensor([4]))
    with pytest.raises(VistokError, match="maximum"):
        model.generate(torch.tensor([0]), grid=(4, 4, 4))
    with pytest.raises(VistokError, match="vocabulary|lie in"):
        model.training_batch(torch.full((1, 1, 4, 4), 2**10), None, None)
    with pytest.raises(VistokError, match="shape"):
        model.training_batch(torch.zeros(4, 4, dtype=torch.long), None, None)
    uncond = MaskedTokenModel(tiny(num_classes=0))
    with pytest.raises(VistokError, match="unconditional"):
        uncond.generate(torch.tensor([0]))
    with pytest.raises(VistokError, match="classifier-free guidance"):
        uncond.generate(num_samples=1, cfg_scale=2.0)
    with pytest.raises(VistokError, match="num_samples"):
        model.generate()
    with pytest.raises(VistokError, match="needs"):
        MaskedTokenModel(lm_config("lm-tiny"))  # vocab, classes and grid not filled in
    with pytest.raises(VistokError, match="kind"):
        lm_config("lm-tiny", kind="diffusion")
    with pytest.raises(VistokError, match="unknown LM preset"):
        lm_config("lm-huge")
