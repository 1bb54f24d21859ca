"""Labelled collections (class folders, IDX) tokenized in batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vistok.data import moving_shapes, to_uint8, write_image, write_video
from vistok.data.labelled import iter_labelled_batches, open_labelled
from vistok.errors import VistokError
from vistok.pipelines.encode_set import tokenize_labelled
from vistok.tokenizers import Magvit2Config, Magvit2Tokenizer

from conftest import TINY_MODEL


@pytest.fixture(scope="module")
def class_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    for c, name in enumerate(["bird", "cat"]):
        (root / name).mkdir()
        for i in range(3):
            img = to_uint8(moving_shapes(frames=1, height=40, width=36, seed=10 * c + i))[0]
            write_image(root / name / f"{i}.png", img)
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return Magvit2Tokenizer(Magvit2Config.preset("tiny", **TINY_MODEL)).eval()


def test_class_folders(class_tree, tok):
    with pytest.warns(UserWarning, match="notes.txt"):
        src = open_labelled(class_tree, size=32)
    assert src.class_names == ["bird", "cat"] and src.items == 6
    batches = list(iter_labelled_batches(src, batch_size=4))
    assert [b[0].shape for b in batches] == [(4, 3, 1, 32, 32), (2, 3, 1, 32, 32)]
    assert torch.cat([b[1] for b in batches]).tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.warns(UserWarning):
        out = tokenize_labelled(tok, open_labelled(class_tree, size=32), batch_size=4)
    assert out.indices.shape == (6, 1, 4, 4) and out.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert out.indices.max() < tok.vocab_size and out.meta["model_id"] == tok.model_id()
    assert out.meta["class_names"] == ["bird", "cat"] and np.isfinite(out.psnr)
    # the same images encoded one by one give the same tokens (batching changes nothing)
    video, _ = next(iter_labelled_batches(src, batch_size=1))
    assert torch.equal(tok.encode(video)[0], torch.from_numpy(out.indices[0]))


def test_video_classes(tmp_path, tok):
    for c in range(2):
        (tmp_path / f"c{c}").mkdir()
        write_video(tmp_path / f"c{c}" / "a.mp4", to_uint8(moving_shapes(frames=12, height=32, width=32, seed=c)), fps=10)
        write_video(tmp_path / f"c{c}" / "short.mp4", to_uint8(moving_shapes(frames=3, height=32, width=32, seed=c)), fps=10)
    with pytest.warns(UserWarning, match="too short"):
        src = open_labelled(tmp_path, size=32, frames=5)
    out = tokenize_labelled(tok, src, measure=False)
    assert out.indices.shape == (2, 2, 4, 4) and out.labels.tolist() == [0, 1] and out.psnr is None


def test_errors(tmp_path, tok):
    with pytest.raises(VistokError, match="not a folder"):
        open_labelled(tmp_path / "nope", size=32)
    with pytest.raises(VistokError, match="no class sub-folders"):
        open_labelled(tmp_path, size=32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VistokError, match="no usable media"):
        open_labelled(tmp_path, size=32)
    with pytest.raises(VistokError, match="1 \\+ 4k"):
        open_labelled(tmp_path, size=32, frames=4)
    write_image(tmp_path / "empty" / "x.png", np.zeros((30, 30, 3), np.uint8))
    src = open_labelled(tmp_path, size=30)
    with pytest.raises(VistokError, match="multiple"):
        tokenize_labelled(tok, src)


def test_cli_encode_set(class_tree, tok, tmp_path, capsys):
    from vistok.cli import main
    from vistok.generate.data import load_token_set

    tok.save_pretrained(tmp_path / "model")
    out = tmp_path / "set.npz"
    with pytest.warns(UserWarning):
        assert main(["encode-set", str(tmp_path / "model"), str(class_tree), str(out), "--size", "32", "--batch-size", "4"]) == 0
    assert "6 items, 2 classes" in capsys.readouterr().out
    ts = load_token_set(out)
    assert ts.indices.shape == (6, 1, 4, 4) and ts.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ts.class_names == ["bird", "cat"] and ts.model_id == tok.model_id()
    assert main(["encode-set", str(tmp_path / "model"), str(class_tree), str(tmp_path / "x.txt"), "--size", "32"]) == 2
    assert "must end in .npz" in capsys.readouterr().err
