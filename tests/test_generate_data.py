"""Token sets and folders of encode files: round trips, storage types and validation errors."""

import json

import numpy as np
import pytest
import torch

from vistok.errors import VistokError
from vistok.generate.data import load_token_files, load_token_set, open_token_data, save_token_set
from vistok.files import save_tokens

META = {"model_id": "tok-a", "vocab_size": 1024, "class_names": ["shirt", "shoe", "bag"], "kind": "image"}


def test_token_set_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 1024, (50, 1, 8, 8))
    labels = rng.integers(0, 3, 50)
    p = save_token_set(tmp_path / "set.npz", idx, labels, META)
    ts = load_token_set(p)
    assert np.array_equal(ts.indices, idx) and ts.indices.dtype == np.int64
    assert np.array_equal(ts.labels, labels)
    assert ts.vocab_size == 1024 and ts.model_id == "tok-a" and ts.num_classes == 3 and ts.grid == (1, 8, 8)
    assert ts.class_names == ["shirt", "shoe", "bag"] and ts.meta["kind"] == "image" and len(ts) == 50
    with np.load(p) as z:
        assert z["indices"].dtype == np.uint16  # 2 bytes per token up to 65536 codes
        assert json.loads(bytes(z["meta"]).decode())["format"] == "vistok-token-set"
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary file was renamed away


def test_large_vocabulary_torch_input_and_unlabelled(tmp_path):
    idx = torch.randint(0, 2**18, (3, 5, 4, 4))
    p = save_token_set(tmp_path / "v.npz", idx, None, {"model_id": "m", "vocab_size": 2**18})
    ts = load_token_set(p)
    assert np.array_equal(ts.indices, idx.numpy()) and ts.labels is None and ts.num_classes == 0
    with np.load(p) as z:
        assert z["indices"].dtype == np.uint32


def test_num_classes_without_names_gives_numbered_classes(tmp_path):
    p = save_token_set(tmp_path / "s.npz", np.zeros((2, 1, 2, 2), int), np.array([0, 4]), {"model_id": "m", "vocab_size": 4, "num_classes": 5})
    assert load_token_set(p).class_names == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    "indices,labels,meta,match",
    [
        (np.zeros((2, 8, 8), int), None, META, r"shape \(N, t', h', w'\)"),
        (np.full((2, 1, 2, 2), 1024), None, META, r"outside the vocabulary \[0, 1024\)"),
        (np.full((2, 1, 2, 2), -1), None, META, "outside the vocabulary"),
        (np.zeros((2, 1, 2, 2)), None, META, "integers"),
        (np.zeros((0, 1, 2, 2), int), None, META, "no tokens"),
        (np.zeros((2, 1, 2, 2), int), np.array([0, 3]), META, r"outside the 3 classes"),
        (np.zeros((2, 1, 2, 2), int), np.array([0, 1, 2]), META, r"labels must have shape \(2,\)"),
        (np.zeros((2, 1, 2, 2), int), np.array([0.0, 1.0]), META, "labels must be integers"),
        (np.zeros((2, 1, 2, 2), int), np.array([0, 1]), {"model_id": "m", "vocab_size": 4}, "class_names"),
        (np.zeros((2, 1, 2, 2), int), None, {"vocab_size": 4}, "model_id"),
        (np.zeros((2, 1, 2, 2), int), None, {"model_id": "m"}, "vocab_size"),
        (np.zeros((2, 1, 2, 2), int), np.array([0, 1]), {**META, "num_classes": 7}, "num_classes"),
    ],
)
def test_save_validation_errors(tmp_path, indices, labels, meta, match):
    with pytest.raises(VistokError, match=match):
        save_token_set(tmp_path / "bad.npz", indices, labels, meta)
    assert not (tmp_path / "bad.npz").exists()


def test_load_errors(tmp_path):
    with pytest.raises(VistokError, match="does not exist"):
        load_token_set(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(VistokError, match="not a vistok token file"):
        load_token_set(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(VistokError, match="expected indices and meta"):
        load_token_set(tmp_path / "other.npz")
    with pytest.raises(VistokError, match="must end in .npz"):
        save_token_set(tmp_path / "set.bin", np.zeros((1, 1, 1, 1), int), None, META)
    # a file edited after writing is checked again on load
    np.savez(tmp_path / "edited.npz", indices=np.full((1, 1, 2, 2), 5000, np.uint16),
             meta=np.frombuffer(json.dumps(META).encode(), np.uint8))
    with pytest.raises(VistokError, match="outside the vocabulary"):
        load_token_set(tmp_path / "edited.npz")


def _encode_file(path, grid=(2, 4, 4), model_id="tok-a", vocab=1024, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = np.random.default_rng(seed).integers(0, vocab, grid)
    save_tokens(path, tokens, {"model_id": model_id, "vocab_size": vocab, "kind": "video", "source": path.name})
    return tokens


def test_folder_of_encode_files_with_class_subfolders(tmp_path):
    a = _encode_file(tmp_path / "cats" / "1.npz", seed=1)
    b = _encode_file(tmp_path / "dogs" / "2.npz", seed=2)
    c = _encode_file(tmp_path / "dogs" / "3.npz", seed=3)
    ts = open_token_data(tmp_path)
    assert ts.class_names == ["cats", "dogs"] and ts.labels.tolist() == [0, 1, 1]
    assert np.array_equal(ts.indices, np.stack([a, b, c])) and ts.grid == (2, 4, 4)


def test_flat_folder_single_file_and_list_are_unlabelled(tmp_path):
    _encode_file(tmp_path / "x" / "a.npz", seed=1)
    _encode_file(tmp_path / "x" / "b.npz", seed=2)
    assert open_token_data(tmp_path / "x").labels is None and len(open_token_data(tmp_path / "x")) == 2
    assert len(open_token_data(tmp_path / "x" / "a.npz")) == 1
    assert len(load_token_files([tmp_path / "x" / "a.npz", tmp_path / "x" / "b.npz"])) == 2


def test_mixing_tokenizers_grids_or_layouts_is_refused(tmp_path):
    _encode_file(tmp_path / "m" / "a.npz")
    _encode_file(tmp_path / "m" / "b.npz", model_id="tok-b")
    with pytest.raises(VistokError, match="one tokenizer"):
        open_token_data(tmp_path / "m")
    _encode_file(tmp_path / "g" / "a.npz")
    _encode_file(tmp_path / "g" / "b.npz", grid=(1, 4, 4))
    with pytest.raises(VistokError, match="differs"):
        open_token_data(tmp_path / "g")
    _encode_file(tmp_path / "l" / "a.npz")
    _encode_file(tmp_path / "l" / "cls" / "b.npz")
    with pytest.raises(VistokError, match="one layout"):
        open_token_data(tmp_path / "l")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VistokError, match="no .npz"):
        open_token_data(tmp_path / "empty")
    with pytest.raises(VistokError, match="one clip"):
        load_token_set(tmp_path / "m" / "a.npz")
