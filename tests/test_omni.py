"""OmniTokenizer invariants: causality in time, image == first frame, streaming == whole clip
(also with a temporal window), windows at sizes the window does not divide, other resolutions,
save/load, the three bottlenecks, clear errors."""

import pytest
import torch

import vistok
from vistok.errors import VistokError
from vistok.nn.attention import SpatialAttention
from vistok.tokenizers import OmniConfig, OmniTokenizer, split_clip

TEST_CFG = dict(dim=32, heads=2, encoder_depth=2, decoder_depth=2, mlp_ratio=2.0, spatial_window=2, codebook_size=64)


def make_tok(dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    return OmniTokenizer(OmniConfig.from_dict({**TEST_CFG, **kw})).to(dtype).eval()


def rand_video(b=2, t=17, h=24, w=32, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, t, h, w, generator=g, dtype=dtype) * 2 - 1).clamp(-1, 1)


def test_shapes_presets_and_parameter_match():
    tok = make_tok()
    video = rand_video()
    out = tok(video)
    assert out.x_hat.shape == video.shape and out.indices.shape == (2, 5, 3, 4)
    assert tok.vocab_size == 64 and tok.temporal_compression == 4 and tok.spatial_compression == 8
    assert torch.equal(tok.encode(video), out.indices)
    torch.testing.assert_close(tok.decode_indices(out.indices), out.x_hat)
    tiny = OmniTokenizer(OmniConfig.preset("omni-tiny"))
    magvit = vistok.tokenizers.Magvit2Tokenizer(vistok.tokenizers.Magvit2Config.preset("tiny"))
    n_omni, n_magvit = (sum(p.numel() for p in m.parameters()) for m in (tiny, magvit))
    assert abs(n_omni - n_magvit) / n_magvit < 0.02  # the head-to-head is at matched size
    assert tiny.latent_shape(17, 64, 64) == magvit.latent_shape(17, 64, 64) == (5, 8, 8)
    assert tiny.vocab_size == 8192


def test_paper_preset_follows_the_released_recipe():
    cfg = OmniConfig.preset("omni-paper")
    assert (cfg.dim, cfg.heads, cfg.encoder_depth, cfg.decoder_depth) == (512, 8, 4, 4)
    assert cfg.encoder_windows == (0, 0, 8, 8) and cfg.decoder_windows == (0, 0, 0, 0)  # "ttww" / "tttt"
    q = cfg.quantizer
    assert (q.kind, q.codebook_size, q.code_dim, q.commitment_weight) == ("vq", 8192, 8, 1.0)
    with torch.device("meta"):  # count without allocating 51 M weights
        tok = OmniTokenizer(cfg)
    assert [b.spatial.window for b in tok.encoder.blocks] == [0, 0, 8, 8]
    assert [b.spatial.window for b in tok.decoder.blocks] == [0, 0, 0, 0]
    assert 50e6 < sum(p.numel() for p in tok.parameters()) < 53e6  # the released model's ~51 M


def test_encoder_is_causal():
    tok = make_tok()
    video = rand_video(b=1)
    lat = tok.encode_latents(video)
    for f in [1, 3, 4, 5, 9, 16]:
        changed = video.clone()
        changed[:, :, f:] = rand_video(b=1, seed=f + 10)[:, :, f:]
        lat2 = tok.encode_latents(changed)
        keep = -(-f // 4)  # latent frame i reads frames <= 4 i
        assert torch.equal(lat[:, :, :keep], lat2[:, :, :keep]), f
        assert not torch.equal(lat[:, :, keep:], lat2[:, :, keep:]), f


def test_decoder_is_causal():
    tok = make_tok()
    codes = tok.indices_to_codes(torch.randint(0, 64, (1, 5, 3, 4))).double()
    x = tok.decode(codes)
    for j in range(1, 5):
        changed = codes.clone()
        changed[:, :, j:] = -changed[:, :, j:]
        x2 = tok.decode(changed)
        keep = 4 * (j - 1) + 1
        assert torch.equal(x[:, :, :keep], x2[:, :, :keep]), j
        assert not torch.equal(x[:, :, keep:], x2[:, :, keep:]), j


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_image_is_first_frame(dtype):
    tok = make_tok(dtype=dtype)
    video = rand_video(dtype=dtype)
    assert torch.equal(tok.encode(video[:, :, :1]), tok.encode(video)[:, :1])
    torch.testing.assert_close(tok.encode_latents(video[:, :, :1]), tok.encode_latents(video)[:, :, :1], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "chunk,kw",
    [(4, {}), (8, {}), (12, {}), (4, {"temporal_window": 2}), (8, {"temporal_window": 3}),
     (8, {"encoder_windows": (0, 2), "decoder_windows": (2, 0)})],
)
def test_streaming_equals_whole_clip(chunk, kw):
    tok = make_tok(**kw)
    video = rand_video(b=1, t=25)
    whole = tok.encode(video)
    pieces = list(tok.encode_stream(split_clip(video, chunk)))
    assert torch.equal(torch.cat(pieces, dim=1), whole)
    x_whole = tok.decode_indices(whole)
    lat_chunk = chunk // 4
    idx_chunks = [whole[:, : 1 + lat_chunk]] + [whole[:, s : s + lat_chunk] for s in range(1 + lat_chunk, whole.shape[1], lat_chunk)]
    x_stream = torch.cat(list(tok.decode_stream(idx_chunks)), dim=2)
    torch.testing.assert_close(x_stream, x_whole, rtol=0, atol=1e-10)
    assert torch.equal(tok.encode(video), whole)  # state dropped after streaming


def test_temporal_window_limits_what_a_frame_sees():
    tok = make_tok(temporal_window=2, encoder_depth=1)
    video = rand_video(b=1, t=17)
    lat = tok.encode_latents(video)
    changed = video.clone()
    changed[:, :, :1] = -changed[:, :, :1]  # latent frame 0
    lat2 = tok.encode_latents(changed)
    # one layer with a window of 2 frames: latent frame 2 and later no longer see frame 0
    assert not torch.equal(lat[:, :, 1], lat2[:, :, 1])
    assert torch.equal(lat[:, :, 2:], lat2[:, :, 2:])


def test_windows_match_explicit_per_window_attention():
    """Window attention with padding equals attention run window by window on the valid tokens."""
    torch.manual_seed(0)
    attn = SpatialAttention(16, 2, window=3).double()
    x = torch.randn(2, 5, 7, 16, dtype=torch.float64)
    out = attn(x)
    from vistok.nn.rotary import apply_axial, axial_angles

    B, h, w, d = x.shape
    qkv = attn.qkv(x).reshape(B, h * w, 3, 2, 8).permute(2, 0, 3, 1, 4)
    cos, sin = axial_angles(h, w, 8, attn.rope_base)
    q, k, v = apply_axial(qkv[0], cos, sin), apply_axial(qkv[1], cos, sin), qkv[2]
    ref = torch.zeros(B, 2, h * w, 8, dtype=torch.float64)
    for r0 in range(0, h, 3):
        for c0 in range(0, w, 3):
            idx = torch.tensor([r * w + c for r in range(r0, min(r0 + 3, h)) for c in range(c0, min(c0 + 3, w))])
            a = torch.softmax(q[:, :, idx] @ k[:, :, idx].transpose(-1, -2) / 8**0.5, dim=-1)
            ref[:, :, idx] = a @ v[:, :, idx]
    ref = attn.proj(ref.transpose(1, 2).reshape(B, h, w, d))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_other_resolutions():
    tok = make_tok(dtype=torch.float32, spatial_window=4)
    for h, w in [(48, 80), (8, 8), (72, 40)]:
        video = rand_video(b=1, t=5, h=h, w=w, dtype=torch.float32)
        idx = tok.encode(video)
        assert idx.shape == (1, 2, h // 8, w // 8)
        assert tok.decode_indices(idx).shape == video.shape


@pytest.mark.parametrize("bottleneck", ["vq", "kl", "lfq"])
def test_bottlenecks_train(bottleneck):
    torch.manual_seed(0)
    tok = OmniTokenizer(OmniConfig.from_dict({**TEST_CFG, "bottleneck": bottleneck, "bits": 8, "codebook_size": 32}))
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    video = rand_video(b=2, t=5, h=16, w=16, dtype=torch.float32)
    losses = []
    for _ in range(25):
        out = tok(video)
        loss = (out.x_hat - video).pow(2).mean() + out.loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float((out.x_hat - video).pow(2).mean().detach()))
    assert losses[-1] < 0.7 * losses[0]
    if bottleneck == "kl":
        assert tok.vocab_size is None and out.indices is None
        with pytest.raises(VistokError, match="encode_codes"):
            tok.encode(video)
        assert tok.eval().encode_codes(video).shape == (2, 8, 2, 2, 2)
    else:
        assert tok.encode(video).max() < tok.vocab_size


def test_kl_streams_codes_and_reconstructs(media_dir):
    """A KL tokenizer has no tokens: its codes stream exactly, and reconstruction goes through them."""
    from vistok.pipelines.reconstruct import reconstruct_file

    tok = make_tok(bottleneck="kl")
    video = rand_video(b=1, t=13)
    codes = tok.encode_codes(video)
    pieces = list(tok.encode_codes_stream(split_clip(video, 4)))
    torch.testing.assert_close(torch.cat(pieces, dim=2), codes, rtol=0, atol=1e-12)  # float64: rounding only
    x_stream = torch.cat(list(tok.decode_codes_stream([codes[:, :, :2], codes[:, :, 2:]])), dim=2)
    torch.testing.assert_close(x_stream, tok.decode(codes), rtol=0, atol=1e-10)
    with pytest.raises(VistokError, match="continuous bottleneck"):
        tok.encode_stream(split_clip(video, 4))
    rec = reconstruct_file(tok.float(), media_dir / "clip0.mp4", chunk_frames=4)
    assert rec.tokens is None and rec.metrics["bits_per_pixel_raw"] is None
    assert rec.reconstructed.shape == rec.original.shape and "no tokens" in rec.summary()


def test_save_load_round_trip(tmp_path):
    tok = make_tok(dtype=torch.float32, encoder_windows=(0, 2))
    tok.save_pretrained(tmp_path / "m")
    back = vistok.load_tokenizer(tmp_path / "m")
    assert isinstance(back, OmniTokenizer) and back.config == tok.config
    video = rand_video(b=1, t=5, dtype=torch.float32)
    assert torch.equal(back.encode(video), tok.encode(video))
    assert back.model_id() == tok.model_id()


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(bottleneck="fsq"), "kind"),
        (dict(dim=30, heads=4), "head size"),
        (dict(spatial_window=-1), "window"),
        (dict(patch_size=0), "patch_size"),
        (dict(encoder_windows=(2,)), "encoder_windows"),
        (dict(decoder_windows=(2, -1)), "decoder_windows"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(VistokError, match=match):
        OmniConfig.from_dict({**TEST_CFG, **kw})
    with pytest.raises(VistokError, match="unknown"):
        OmniConfig.from_dict({"depth": 3})
    with pytest.raises(VistokError, match="preset"):
        OmniConfig.preset("omni-huge")


def test_bad_input_errors():
    tok = make_tok(dtype=torch.float32)
    with pytest.raises(ValueError, match="frames"):
        tok.encode(torch.zeros(1, 3, 4, 16, 16))
    with pytest.raises(ValueError, match="multiple of 8"):
        tok.encode(torch.zeros(1, 3, 5, 12, 16))
    with pytest.raises(ValueError, match="unsqueeze"):
        tok.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="indices"):
        tok.decode_indices(torch.full((1, 2, 2, 2), 64))


@pytest.mark.parametrize("name", ["default", "tiny-codec", "omni"])
def test_every_shipped_model_loads_codes_a_clip_and_has_a_card(name):
    """Each shipped name loads from the package, has a model card, and its tokens decode to a clip of
    the input's shape, much closer to the input than the same network untrained gets."""
    from vistok.data import moving_shapes
    from vistok.tokenizers.shipped import SHIPPED_MODELS

    assert (SHIPPED_MODELS[name] / "MODEL_CARD.md").is_file()
    tok = vistok.load_tokenizer(name)
    video = moving_shapes(frames=5, height=64, width=64, seed=2).unsqueeze(0)
    torch.manual_seed(0)
    untrained = type(tok)(tok.config).eval()
    with torch.no_grad():
        out = tok.decode_indices(tok.encode(video)).clamp(-1, 1)
        base = untrained.decode_indices(untrained.encode(video)).clamp(-1, 1)
    assert out.shape == video.shape
    assert torch.mean((out - video) ** 2) < 0.5 * torch.mean((base - video) ** 2)


def test_vq_dead_code_threshold_reaches_the_quantizer_and_not_the_model_id():
    """`model.quantizer.vq_dead_code_threshold` turns on the VQ's dead-code restarts; a training-only
    setting, it leaves the model id (what token files record) unchanged."""
    plain, restarting = make_tok(seed=3), make_tok(seed=3, quantizer=dict(kind="vq", vq_dead_code_threshold=0.01))
    assert plain.quantizer.dead_code_threshold == 0.0 and restarting.quantizer.dead_code_threshold == 0.01
    assert plain.model_id() == restarting.model_id()
    with pytest.raises(VistokError, match="vq_dead_code_threshold"):
        make_tok(quantizer=dict(kind="vq", vq_dead_code_threshold=-1.0))
