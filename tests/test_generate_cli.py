"""``vistok train-lm``, ``vistok generate`` and ``vistok predict-frames`` end to end on tiny models."""

import numpy as np
import pytest
import torch

from lm_fixtures import TINY_LM, tiny_tokenizer, token_set
from vistok.cli import main
from vistok.data import moving_shapes, to_uint8, write_video
from vistok.data.images import read_image
from vistok.data.video import probe_video, read_video
from vistok.generate import build_lm, lm_config, load_lm
from vistok.generate.data import load_token_set


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm-cli")
    tok, tok_dir = tiny_tokenizer(d / "tok")
    other, other_dir = tiny_tokenizer(d / "other", seed=1)
    common = dict(vocab_size=64, dim=32, depth=1, heads=2, tokenizer_id=tok.model_id())
    torch.manual_seed(0)
    image_lm = build_lm(lm_config("lm-tiny", num_classes=3, class_names=["tee", "shoe", "bag"], max_grid=(1, 4, 4), **common))
    image_lm.save_pretrained(d / "image-lm")
    video_lm = build_lm(lm_config("lm-tiny", kind="ar", num_classes=0, max_grid=(3, 4, 4), **common))
    video_lm.save_pretrained(d / "video-lm")
    clip = d / "clip.mp4"
    write_video(clip, to_uint8(moving_shapes(frames=7, height=16, width=16, seed=0)), fps=8, crf=10)
    return {"dir": d, "tok": tok_dir, "other": other_dir, "image_lm": d / "image-lm", "video_lm": d / "video-lm", "clip": clip}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    # commands must not switch autograd off for the rest of the process (a caller may train next)
    assert torch.is_grad_enabled()
    out, err = capsys.readouterr()
    return code, out, err


def test_train_lm_then_resume_then_generate(tmp_path, capsys, models):
    from vistok import load_tokenizer

    data = token_set(tmp_path / "set.npz", n=8, model_id=load_tokenizer(models["tok"]).model_id())
    sets = [x for s in TINY_LM for x in ("--set", s)]
    code, out, err = run(capsys, "train-lm", "lm-tiny", "--data", data, "--out", tmp_path / "run", "--steps", 2,
                         "--tokenizer", models["tok"], "--quiet", *sets)
    assert code == 0, err
    assert "trained 2 steps" in out
    code, out, err = run(capsys, "train-lm", "lm-tiny", "--data", data, "--out", tmp_path / "run", "--steps", 3,
                         "--resume", "--quiet", *sets)
    assert code == 0, err
    assert "trained 3 steps" in out and load_lm(tmp_path / "run").config.num_classes == 3
    code, out, err = run(capsys, "generate", tmp_path / "run", models["tok"], "--class", "class2", "--num", 2,
                         "--steps", 4, "--cfg", 2, "--out", tmp_path / "gen")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "gen").glob("class2_*.png")) == ["class2_000.png", "class2_001.png"]


def test_generate_images_per_class_with_guidance(tmp_path, capsys, models):
    code, out, err = run(capsys, "generate", models["image_lm"], models["tok"], "--class", 1, "--num", 3, "--steps", 4,
                         "--cfg", 1.5, "--seed", 7, "--out", tmp_path / "g")
    assert code == 0, err
    files = sorted((tmp_path / "g").glob("shoe_*.png"))
    assert len(files) == 3 and read_image(files[0]).shape == (8, 8, 3)
    assert read_image(tmp_path / "g" / "grid.png").shape[2] == 3
    ts = load_token_set(tmp_path / "g" / "tokens.npz")
    assert ts.grid == (1, 4, 4) and ts.labels.tolist() == [1, 1, 1] and ts.class_names == ["tee", "shoe", "bag"]
    # the same seed gives the same samples
    run(capsys, "generate", models["image_lm"], models["tok"], "--class", "shoe", "--num", 3, "--steps", 4,
        "--cfg", 1.5, "--seed", 7, "--out", tmp_path / "g2")
    assert np.array_equal(load_token_set(tmp_path / "g2" / "tokens.npz").indices, ts.indices)


def test_generate_video_clips(tmp_path, capsys, models):
    code, out, err = run(capsys, "generate", models["video_lm"], models["tok"], "--num", 2, "--out", tmp_path / "v")
    assert code == 0, err
    clips = sorted((tmp_path / "v").glob("sample_*.gif"))
    assert len(clips) == 2 and probe_video(clips[0]).frames == 5  # 3 latent frames, 2x in time
    code, out, err = run(capsys, "generate", models["video_lm"], models["tok"], "--num", 1, "--format", "mp4",
                         "--out", tmp_path / "m")
    assert code == 0 and len(list((tmp_path / "m").glob("*.mp4"))) == 1


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--class", "3"], "--class 3 is out of range: this model has 3 classes (0=tee, 1=shoe, 2=bag)"),
        (["--class", "hat"], "unknown class 'hat'"),
        (["--cfg", "2"], "classifier-free guidance"),
        (["--class", "0", "--num", "0"], "--num must be >= 1"),
        (["--class", "0", "--temperature", "-1"], "temperature"),
    ],
)
def test_generate_errors_are_one_line(tmp_path, capsys, models, extra, match):
    code, out, err = run(capsys, "generate", models["image_lm"], models["tok"], "--out", tmp_path / "x", *extra)
    assert code == 2 and err.startswith("vistok: error:") and match in err and "Traceback" not in err


def test_generate_refuses_another_tokenizer_unless_forced(tmp_path, capsys, models):
    code, _, err = run(capsys, "generate", models["image_lm"], models["other"], "--class", 0, "--out", tmp_path / "a")
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, "generate", models["image_lm"], models["other"], "--class", 0, "--num", 1,
                       "--force", "--out", tmp_path / "b")
    assert code == 0, err
    code, _, err = run(capsys, "generate", models["tok"], models["image_lm"], "--out", tmp_path / "c")
    assert code == 2 and "pass the language model first" in err
    code, _, err = run(capsys, "generate", models["video_lm"], models["tok"], "--class", 0, "--out", tmp_path / "d")
    assert code == 2 and "unconditional" in err


def test_predict_frames_side_by_side(tmp_path, capsys, models):
    out = tmp_path / "pred.mp4"
    code, stdout, err = run(capsys, "predict-frames", models["video_lm"], models["tok"], models["clip"], "--frames", 3,
                            "--out", out)
    assert code == 0, err
    assert "3 given frame(s) of 5" in stdout
    frames = read_video(out)
    assert frames.shape[0] == 5 and frames.shape[2] >= 2 * 8 + 2  # original | gap | prediction (8x8 each)


def test_predict_frames_errors(tmp_path, capsys, models):
    code, _, err = run(capsys, "predict-frames", models["video_lm"], models["tok"], models["clip"], "--frames", 2,
                       "--out", tmp_path / "p.mp4")
    assert code == 2 and "--frames must be 1 + 2k" in err
    code, _, err = run(capsys, "predict-frames", models["video_lm"], models["tok"], models["clip"], "--frames", 5,
                       "--out", tmp_path / "p.mp4")
    assert code == 2 and "fewer than the 5 frames" in err
    code, _, err = run(capsys, "predict-frames", models["image_lm"], models["tok"], models["clip"], "--frames", 1,
                       "--out", tmp_path / "p.mp4")
    assert code == 2 and "no frames to predict" in err
    code, _, err = run(capsys, "predict-frames", models["video_lm"], models["tok"], tmp_path / "none.mp4",
                       "--frames", 1, "--out", tmp_path / "p.mp4")
    assert code == 2 and "does not exist" in err
