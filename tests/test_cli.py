"""CLI round trips on a tiny model: train, reconstruct, encode/decode, info, shard; clear errors."""

import json

import numpy as np
import pytest
import torch

import vistok
from vistok.cli import main
from vistok.data import probe_video, read_image, read_video
from vistok.files import load_tokens
from vistok.tokenizers import Magvit2Config, Magvit2Tokenizer

from conftest import TINY_MODEL, tiny_train_overrides


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_reconstruct_video_and_image(capsys, model_dir, media_dir, tmp_path):
    code, out, _ = run(capsys, "reconstruct", model_dir, media_dir / "clip0.mp4", tmp_path / "r.mp4", "--metrics", tmp_path / "m.json")
    assert code == 0 and "PSNR" in out and "SSIM" in out
    assert "used 13 of 14 frames" in out and "centre-cropped" not in out  # 40x48 needs no crop
    info = probe_video(tmp_path / "r.mp4")
    assert (info.frames, info.height, info.width) == (13, 40, 48)
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["frames"] == 13 and m["token_grid"] == [4, 5, 6]
    code, out, _ = run(capsys, "reconstruct", model_dir, media_dir / "image0.png", tmp_path / "r.png")
    assert code == 0 and "centre-cropped 36x36 to 32x32" in out
    assert read_image(tmp_path / "r.png").shape == (32, 32, 3)


def test_encode_decode_round_trip(capsys, model_dir, media_dir, tmp_path):
    assert run(capsys, "encode", model_dir, media_dir / "clip1.mp4", tmp_path / "t.npz", "--chunk-frames", "4")[0] == 0
    tokens, meta = load_tokens(tmp_path / "t.npz")
    tok = vistok.load_tokenizer(model_dir)
    assert meta["model_id"] == tok.model_id() and tokens.shape == (4, 5, 6)
    # streamed encoding in 4-frame chunks == encoding the whole (trimmed, cropped) clip at once
    frames = torch.from_numpy(read_video(media_dir / "clip1.mp4", num_frames=13)).permute(3, 0, 1, 2)
    video = frames.float().div(127.5).sub(1)[None]
    assert np.array_equal(tok.encode(video)[0].numpy(), tokens)
    assert run(capsys, "decode", model_dir, tmp_path / "t.npz", tmp_path / "d.gif", "--chunk-latents", "1")[0] == 0
    assert read_video(tmp_path / "d.gif").shape[1:] == (40, 48, 3)


def test_decode_refuses_another_model(capsys, model_dir, media_dir, tmp_path):
    run(capsys, "encode", model_dir, media_dir / "image1.png", tmp_path / "t.npz")
    other = tmp_path / "other"
    torch.manual_seed(1)
    Magvit2Tokenizer(Magvit2Config.from_dict(TINY_MODEL)).save_pretrained(other)
    code, _, err = run(capsys, "decode", other, tmp_path / "t.npz", tmp_path / "d.png")
    assert code == 2 and "another model" in err
    assert run(capsys, "decode", other, tmp_path / "t.npz", tmp_path / "d.png", "--force")[0] == 0


def test_info(capsys, model_dir):
    code, out, _ = run(capsys, "info", model_dir, "--json")
    info = json.loads(out)
    assert code == 0 and info["vocab_size"] == 2**10 and info["spatial_compression"] == 8


def test_train_command(capsys, media_dir, tmp_path):
    sets = []
    for s in tiny_train_overrides(media_dir):
        sets += ["--set", s]
    code, out, _ = run(capsys, "train", "tiny", "--steps", "2", "--out", tmp_path / "run", "--quiet", *sets)
    assert code == 0 and "trained 2 steps" in out
    assert vistok.load_tokenizer(tmp_path / "run").vocab_size == 2**10


def test_shard_command(capsys, media_dir, tmp_path):
    code, out, _ = run(capsys, "shard", media_dir, tmp_path / "shards", "--max-count", "2")
    assert code == 0 and "wrote 2 shard(s)" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reconstruct", "{model}", "{tmp}/missing.mp4", "{tmp}/o.mp4"], "does not exist"),
        (["reconstruct", "{model}", "{tmp}/notes.txt", "{tmp}/o.mp4"], "unrecognised media type"),
        (["reconstruct", "{model}", "{tmp}/broken.mp4", "{tmp}/o.mp4"], "broken.mp4"),
        (["reconstruct", "{tmp}", "{tmp}/broken.mp4", "{tmp}/o.mp4"], "not a saved tokenizer"),
        (["decode", "{model}", "{tmp}/notes.txt", "{tmp}/o.mp4"], "not a vistok token file"),
        (["train", "tiny", "--out", "{tmp}/run", "--data", "{tmp}/nowhere"], "does not exist"),
        (["train", "tiny", "--out", "{tmp}/run", "--set", "optim.lr"], "key.sub=value"),
    ],
)
def test_bad_input_is_one_clear_line(capsys, model_dir, tmp_path, argv, message):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    args = [a.format(model=model_dir, tmp=tmp_path) for a in argv]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert err.startswith("vistok: error:") and message in err and "Traceback" not in err
