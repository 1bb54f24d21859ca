"""MAGVIT-v2 tokenizer invariants: causality, image == first frame, streaming == whole clip,
save/load identity, clear errors, and that training on one real clip reduces the loss."""

import json

import pytest
import torch

import vistok
from vistok.tokenizers import Magvit2Config, Magvit2Tokenizer, split_clip

# channels 8-16, like diffusers' tiny test configs: fast on 2 cores, same code paths as the presets
TEST_CFG = dict(base_channels=8, channel_multipliers=(1, 2, 2, 2), num_res_blocks=1, norm_groups=4, bits=10)


def make_tok(dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    tok = Magvit2Tokenizer(Magvit2Config.from_dict({**TEST_CFG, **kw})).to(dtype).eval()
    # the decoder's adaptive norms start at zero (a plain GroupNorm); randomize them so the tests
    # also exercise the code-conditioned path
    with torch.no_grad():
        for name, p in tok.named_parameters():
            if ".proj." in name:
                p.normal_(0, 0.1)
    return tok


def rand_video(b=2, t=17, h=16, w=16, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, 3, t, h, w, generator=g, dtype=dtype) * 2 - 1).clamp(-1, 1)


def test_shapes_and_properties():
    tok = make_tok()
    video = rand_video()
    out = tok(video)
    assert out.x_hat.shape == video.shape
    assert out.indices.shape == (2, 5, 2, 2) and out.indices.dtype == torch.int64
    assert out.codes.shape == (2, 10, 5, 2, 2)
    assert tok.vocab_size == 2**10 and tok.temporal_compression == 4 and tok.spatial_compression == 8
    assert tok.latent_shape(17, 64, 48) == (5, 8, 6)
    idx = tok.encode(video)
    assert torch.equal(idx, out.indices)
    x_hat = tok.decode_indices(idx)
    torch.testing.assert_close(x_hat, out.x_hat)


def test_encoder_is_causal():
    """Changing frames after f leaves latent frames whose receptive field excludes f bit-identical."""
    tok = make_tok()
    video = rand_video(b=1)
    lat = tok.encode_latents(video)
    for f in [1, 4, 5, 9, 13, 16]:
        changed = video.clone()
        changed[:, :, f:] = rand_video(b=1, seed=f + 10)[:, :, f:]
        lat2 = tok.encode_latents(changed)
        # latent frame i reads input frames <= 4 i: frames i < ceil(f / 4) are unaffected
        keep = -(-f // 4)
        assert torch.equal(lat[:, :, :keep], lat2[:, :, :keep]), f
        assert not torch.equal(lat[:, :, keep:], lat2[:, :, keep:]), f


def test_decoder_is_causal():
    tok = make_tok()
    codes = tok.indices_to_codes(torch.randint(0, 2**10, (1, 5, 2, 2))).double()
    x = tok.decode(codes)
    for j in range(1, 5):
        changed = codes.clone()
        changed[:, :, j:] = -changed[:, :, j:]
        x2 = tok.decode(changed)
        # output frame f reads latent frame ceil(f / 4): frames f <= 4 (j - 1) are unaffected
        keep = 4 * (j - 1) + 1
        assert torch.equal(x[:, :, :keep], x2[:, :, :keep]), j
        assert not torch.equal(x[:, :, keep:], x2[:, :, keep:]), j


def test_image_shares_vocabulary_with_first_frame():
    tok = make_tok()
    video = rand_video()
    assert torch.equal(tok.encode(video[:, :, :1]), tok.encode(video)[:, :1])
    torch.testing.assert_close(tok.decode_indices(tok.encode(video)[:, :1]), tok(video).x_hat[:, :, :1])


def test_float32_image_equals_first_frame():
    tok = make_tok(dtype=torch.float32)
    video = rand_video(dtype=torch.float32)
    assert torch.equal(tok.encode(video[:, :, :1]), tok.encode(video)[:, :1])


@pytest.mark.parametrize("chunk", [4, 8, 12])
def test_streaming_equals_whole_clip(chunk):
    tok = make_tok()
    video = rand_video(b=1, t=33)
    whole = tok.encode(video)
    pieces = list(tok.encode_stream(split_clip(video, chunk)))
    assert [p.shape[1] for p in pieces][0] == 1 + chunk // 4
    assert torch.equal(torch.cat(pieces, dim=1), whole)

    x_whole = tok.decode_indices(whole)
    latent_chunks = [whole[:, :2], whole[:, 2:5], whole[:, 5:6], whole[:, 6:]]
    x_pieces = list(tok.decode_stream(latent_chunks))
    assert [p.shape[2] for p in x_pieces] == [5, 12, 4, 12]
    torch.testing.assert_close(torch.cat(x_pieces, dim=2), x_whole, rtol=1e-10, atol=1e-10)
    # the streaming state is dropped afterwards: a plain call still works on a fresh clip
    assert torch.equal(tok.encode(video), whole)


def test_streaming_rejects_misaligned_chunks():
    tok = make_tok()
    video = rand_video(b=1, t=17)
    with pytest.raises(ValueError, match="frames"):
        list(tok.encode_stream([video[:, :, :5], video[:, :, 5:8]]))


def test_save_load_round_trip(tmp_path):
    tok = make_tok(dtype=torch.float32)
    video = rand_video(dtype=torch.float32)
    tok.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["model_type"] == "magvit2" and meta["config"]["quantizer"]["bits"] == 10
    assert not list((tmp_path / "m").glob("*.pt")) and not list((tmp_path / "m").glob("*.bin"))
    loaded = vistok.load_tokenizer(tmp_path / "m")
    assert loaded.model_id() == tok.model_id() == meta["model_id"]
    assert torch.equal(loaded.encode(video), tok.encode(video))
    assert torch.equal(loaded(video).x_hat, tok(video).x_hat)


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        vistok.load_tokenizer(tmp_path / "nope")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match="cannot read"):
        vistok.load_tokenizer(tmp_path / "bad")
    tok = make_tok(dtype=torch.float32)
    tok.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="cannot load weights"):
        vistok.load_tokenizer(tmp_path / "m")


@pytest.mark.parametrize(
    "video, match",
    [
        (torch.zeros(1, 3, 16, 16, 16), "frames"),
        (torch.zeros(1, 3, 17, 20, 16), "divisible by 8"),
        (torch.zeros(1, 1, 17, 16, 16), "channels"),
        (torch.zeros(1, 3, 16, 16), "unsqueeze"),
        (torch.zeros(1, 3, 1, 16, 16, dtype=torch.uint8), "dtype"),
        (torch.full((1, 3, 1, 16, 16), 255.0), r"\[-1, 1\]"),
        (torch.full((1, 3, 1, 16, 16), float("nan")), "NaN"),
    ],
)
def test_bad_video_raises_value_error(video, match):
    tok = make_tok(dtype=torch.float32)
    with pytest.raises(ValueError, match=match):
        tok.encode(video)


def test_bad_indices_raise_value_error():
    tok = make_tok(dtype=torch.float32)
    with pytest.raises(ValueError):
        tok.decode_indices(torch.full((1, 2, 2, 2), 2**10))
    with pytest.raises(ValueError):
        tok.decode_indices(torch.zeros(1, 2, 2))


def test_presets_compress_time_4x():
    for name in ["tiny", "ucf-128", "imagenet-256"]:
        cfg = Magvit2Config.preset(name)
        assert sum(cfg.temporal_downsample) == 2, name
        assert not cfg.temporal_downsample[0], name  # time is down-sampled only in later stages
    with pytest.raises(ValueError, match="unknown"):
        Magvit2Config.preset("huge")


def test_half_precision_save_keeps_a_consistent_model_id(tmp_path):
    tok = make_tok(dtype=torch.float32)
    tok.save_pretrained(tmp_path / "h", weight_dtype=torch.float16)
    meta = json.loads((tmp_path / "h" / "config.json").read_text())
    loaded = vistok.load_tokenizer(tmp_path / "h")
    assert next(loaded.parameters()).dtype == torch.float32
    assert loaded.model_id() == meta["model_id"] == tok.model_id(weight_dtype=torch.float16) != tok.model_id()
    video = rand_video(dtype=torch.float32)
    assert (loaded(video).x_hat - tok(video).x_hat).abs().max() < 0.05
