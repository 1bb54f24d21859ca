"""`vistok eval`: clip selection, metrics against direct computation, Fréchet distances recomputable
from the saved features, bad files skipped by name — on tiny random networks (no real weights)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vistok.cli import main
from vistok.errors import VistokError
from vistok.data import moving_shapes, to_uint8, write_video
from vistok.metrics.frechet import GaussianStats, frechet_distance
from vistok.metrics.i3d import I3D
from vistok.metrics.inception import InceptionV3FID
from vistok.metrics.perceptual import LPIPS
from vistok.codec.baselines import block_means
from vistok.metrics.quality import frame_scores, psnr
from vistok.pipelines.evaluate import EvalNetworks, EvalProtocol, evaluate, select_clips
from vistok.tokenizers import Magvit2Config, Magvit2Tokenizer

from conftest import TINY_MODEL

PROTOCOL = dict(frames=9, size=32, crop=32, fvd_frames=8, fvd_resize=32, chunk_frames=4)


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL)).eval()


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(1)
    return EvalNetworks(inception=InceptionV3FID().eval(), i3d=I3D().eval(),
                        lpips={"lpips_vgg": LPIPS(width=8).eval(), "lpips_alex": LPIPS(net="alex", width=8).eval()})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("evaldata")
    for i in range(2):
        write_video(d / f"clip{i}.mp4", to_uint8(moving_shapes(frames=30, height=40, width=48, seed=i)), fps=10, crf=10)
    (d / "broken.mp4").write_bytes(b"not a video at all")
    from vistok.data import write_image

    write_image(d / "still.png", to_uint8(moving_shapes(frames=1, height=36, width=36, seed=5))[0])
    return d


def test_clip_selection_is_deterministic_and_skips_bad_files(data):
    p = EvalProtocol.from_dict({**PROTOCOL, "clips_per_video": 2, "seed": 3})
    skipped = []
    a = select_clips([data], p, temporal=4, spatial=8, skipped=skipped)
    b = select_clips([data], p, temporal=4, spatial=8)
    assert [c.name for c in a] == [c.name for c in b] and all(np.array_equal(x.frames, y.frames) for x, y in zip(a, b))
    assert len(a) == 5 and [s for s, _ in skipped] == [str(data / "broken.mp4")]
    assert {c.frames.shape[1:] for c in a} == {(32, 32, 3)} and sorted({c.frames.shape[0] for c in a}) == [1, 9]
    other = select_clips([data], EvalProtocol.from_dict({**PROTOCOL, "clips_per_video": 2, "seed": 4}), temporal=4, spatial=8)
    assert [c.start for c in other] != [c.start for c in a]  # the seed moves the windows


def test_metrics_match_direct_computation_and_features_recompute(tok, nets, data, tmp_path):
    p = EvalProtocol.from_dict(PROTOCOL)
    res = evaluate([("tiny", tok)], [data], protocol=p, networks=nets, worst=2)
    files = res.write(tmp_path / "out", save_features=True)
    report = json.loads(files["json"].read_text())
    agg = report["models"]["tiny"]["aggregate"]
    for key in ("psnr", "ssim", "lpips_vgg", "lpips_alex", "rfid", "rfvd", "codebook_usage", "perplexity",
                "bits_per_token_raw", "bits_per_token_coded", "bpp", "encode_fps", "decode_fps"):
        assert agg[key] is not None, key
    assert agg["ms_ssim"] is None  # 32-pixel frames hold too few MS-SSIM scales
    assert agg["bits_per_token_raw"] == 10 and 0 < agg["bits_per_token_coded"] <= 10.5
    rows = report["models"]["tiny"]["per_clip"]
    assert len(rows) == len(report["clips"]) == 3 and [s["source"] for s in report["skipped"]] == [str(data / "broken.mp4")]
    # PSNR of the first clip, recomputed from the tokenizer directly (frame-averaged on uint8 frames)
    clip = select_clips([data], p, temporal=4, spatial=8)[0]
    assert (res.clips[0].name, res.clips[0].frames, res.clips[0].height) == (clip.name, 9, 32)
    video = torch.from_numpy(clip.frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1
    x_hat = tok.decode_indices(tok.encode(video)).clamp(-1, 1)
    rec = ((x_hat + 1) * 127.5).round() / 127.5 - 1
    direct = psnr(rec[0].transpose(0, 1), video[0].transpose(0, 1), max_db=100.0).double().mean()
    assert rows[0]["psnr"] == pytest.approx(float(direct), abs=1e-4)
    # every Fréchet distance in eval.json can be recomputed from features.npz
    with np.load(files["features"]) as f:
        assert f["inception_real"].shape == (9 + 9 + 1, 2048) and f["i3d_real"].shape == (2, 400)
        rfid = frechet_distance(GaussianStats.from_features(f["inception_real"]), GaussianStats.from_features(f["inception_recon"]))
        rfvd = frechet_distance(GaussianStats.from_features(f["i3d_real"]), GaussianStats.from_features(f["i3d_recon"]))
    assert rfid == pytest.approx(agg["rfid"], rel=1e-12) and rfvd == pytest.approx(agg["rfvd"], rel=1e-12)
    assert any(n.startswith("rFVD over 2 samples") and "singular" in n for n in report["notes"])
    assert (tmp_path / "out" / "worst_tiny.png").stat().st_size > 0 and "| tiny |" in files["md"].read_text()
    # the trivial baseline is scored beside the model on the same frames, and every row carries the
    # first-frame / later-frame split and the chroma error
    block = report["models"][f"{tok.spatial_compression}x{tok.spatial_compression} block means"]
    want = block_means(clip.frames, tok.spatial_compression)
    assert block["per_clip"][0]["psnr"] == pytest.approx(frame_scores(clip.frames, want)["psnr"], abs=1e-9)
    for row in rows + block["per_clip"]:
        assert {"psnr_first", "psnr_later", "chroma_error", "grey_input"} <= row.keys()
    first = psnr(rec[0].transpose(0, 1)[:1], video[0].transpose(0, 1)[:1], max_db=100.0)
    assert rows[0]["psnr_first"] == pytest.approx(float(first.double().mean()), abs=1e-4)


def test_shard_members_give_the_same_clips_as_the_files(data, tmp_path):
    """Clips read from a .tar shard (each member read at its offset when its clip comes up) equal
    the clips of the same files on disk."""
    import tarfile

    shard = tmp_path / "shard.tar"
    with tarfile.open(shard, "w") as tar:
        tar.add(__file__, arcname="a-readme.txt")  # not media: passed over
        for name in ("clip0.mp4", "clip1.mp4", "still.png"):
            tar.add(data / name, arcname=f"x/{name}")
    p = EvalProtocol.from_dict({**PROTOCOL, "clips_per_video": 2, "seed": 3})
    from_files = select_clips([data], p, temporal=4, spatial=8)
    from_shard = select_clips([shard], p, temporal=4, spatial=8)
    assert [Path(c.name).name for c in from_shard] == [Path(c.name).name for c in from_files]
    assert from_shard[0].source == "shard.tar:x/clip0.mp4" and len(from_shard) == 5
    for a, b in zip(from_files, from_shard):
        assert a.start == b.start and np.array_equal(a.frames, b.frames)


def test_clips_stream_one_at_a_time_and_chunking_is_exact(tok, data, monkeypatch):
    """evaluate decodes one clip at a time (no earlier clip is alive when the next is read), keeps
    only the worst clips' frames, counts codes as it goes, and any chunk length gives the same rows."""
    import gc
    import weakref

    import vistok.pipelines.evaluate as ev

    alive, most = [], []
    real_read = ev.read_clip

    def read(window, protocol, *, spatial):
        gc.collect()
        most.append(sum(r() is not None for r in alive))
        clip = real_read(window, protocol, spatial=spatial)
        alive.append(weakref.ref(clip))
        return clip

    monkeypatch.setattr(ev, "read_clip", read)
    p = EvalProtocol.from_dict({**PROTOCOL, "clips_per_video": 2})
    res = evaluate([("tiny", tok)], [data], protocol=p, networks=EvalNetworks(), worst=2)
    assert len(most) == 5 and max(most) <= 1  # the loop variable may hold the previous clip, nothing more
    rows = res.models["tiny"]["per_clip"]
    worst = sorted(range(len(rows)), key=lambda i: rows[i]["psnr"])[:2]
    assert [name for name, _, _ in res.worst["tiny"]] == [rows[i]["clip"] for i in worst]
    clips = {c.name: c for c in select_clips([data], p, temporal=4, spatial=8)}
    for name, original, _ in res.worst["tiny"]:
        assert np.array_equal(original, clips[name].frames)
    counts = np.zeros(tok.vocab_size, np.int64)
    for c in clips.values():
        counts += np.bincount(tok.encode(torch.from_numpy(c.frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1)
                              .ravel().numpy(), minlength=tok.vocab_size)
    assert res.models["tiny"]["aggregate"]["codebook_usage"] == int((counts > 0).sum())
    longer = evaluate([("tiny", tok)], [data], protocol=EvalProtocol.from_dict({**PROTOCOL, "clips_per_video": 2,
                                                                                  "chunk_frames": 8}),
                      networks=EvalNetworks(), worst=2)
    for a, b in zip(rows, longer.models["tiny"]["per_clip"]):
        assert a["psnr"] == b["psnr"] and a["bpp"] == b["bpp"]


def test_eval_memory_budget_too_small_is_one_clear_error(tok, data):
    with pytest.raises(VistokError, match="over the memory budget"):
        evaluate([("tiny", tok)], [data], protocol=EvalProtocol.from_dict(PROTOCOL), networks=EvalNetworks(),
                 max_memory=1 << 20)


def test_identical_reconstruction_scores_perfect(nets, data):
    p = EvalProtocol.from_dict({**PROTOCOL, "max_clips": 2})
    clips = select_clips([data], p, temporal=4, spatial=8)
    from vistok.metrics.quality import frame_scores

    s = frame_scores(clips[0].frames, clips[0].frames.copy(), nets.lpips)
    assert s["psnr"] == 100.0 and s["ssim"] == pytest.approx(1.0) and s["lpips_vgg"] == pytest.approx(0.0, abs=1e-6)


def test_cli_eval_without_weights_and_errors(capsys, tmp_path, data):
    model = tmp_path / "m"
    torch.manual_seed(0)
    Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL)).save_pretrained(model)
    code = main(["eval", str(model), str(data / "clip0.mp4"), "--out", str(tmp_path / "e"), "--size", "32", "--crop", "32",
                 "--frames", "5", "--home", str(tmp_path / "empty-home")])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["models"]["m"]["aggregate"]["rfid"] is None
    assert any("vistok weights install" in n for n in report["notes"])
    code = main(["eval", str(model), str(tmp_path / "missing"), "--out", str(tmp_path / "e2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vistok: error:")


def test_vq_tokenizer_against_a_codec_at_its_raw_index_rate(data):
    """A VQ bottleneck has no entropy coder: its rate is the raw indices (log2 V bits each), the
    codec is matched to that, and a note says so (this once crashed after the first clip)."""
    import math

    from vistok.tokenizers import OmniConfig, OmniTokenizer

    torch.manual_seed(0)
    omni = OmniTokenizer(OmniConfig.from_dict(dict(dim=32, heads=2, encoder_depth=1, decoder_depth=1, mlp_ratio=2.0,
                                                   spatial_window=2, codebook_size=64))).eval()
    p = EvalProtocol.from_dict({**PROTOCOL, "max_clips": 2})
    res = evaluate([("omni", omni)], [data], protocol=p, networks=EvalNetworks(), codecs=["x264"])
    rows = res.models["omni"]["per_clip"]
    for row, clip in zip(rows, res.clips):
        assert row["bpp"] == pytest.approx(row["tokens"] * math.log2(64) / (clip.frames * clip.height * clip.width))
    assert all(r["bpp"] > 0 and r["crf"] is not None for r in res.models["x264 (matched bpp)"]["per_clip"])
    assert any(n.startswith("omni: bpp is the rate of the raw token indices, log2(64) = 6.00") for n in res.notes)
