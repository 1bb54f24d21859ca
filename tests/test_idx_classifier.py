"""IDX (MNIST-format) labelled images and the small evaluation classifier."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from vistok.data.idx import IdxImageDataset, fit_images, is_idx_folder, load_idx_split, read_idx, unfit_images
from vistok.errors import VistokError
from vistok.metrics.classifier import SmallConvClassifier, accuracy, per_class_accuracy, train_classifier


def _idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D}
    head = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_set(folder, images: np.ndarray, labels: np.ndarray, split: str = "train", gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    prefix = {"train": "train", "test": "t10k"}[split]
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = _idx_bytes(arr)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)


@pytest.mark.parametrize("dtype", ["uint8", "int32", "float32"])
def test_read_idx_round_trip(tmp_path, dtype):
    a = (np.arange(2 * 3 * 5) * 7 % 251).reshape(2, 3, 5).astype(dtype)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(_idx_bytes(a)))
    for name in ("a.idx", "a.idx.gz"):
        b = read_idx(tmp_path / name)
        assert b.dtype == np.dtype(dtype) and np.array_equal(a, b)


def test_read_idx_rejects_damage(tmp_path):
    good = _idx_bytes(np.zeros((4, 6, 6), np.uint8))
    cases = {
        "truncated": good[:-1],
        "padded": good + b"\0",
        "magic": b"\1" + good[1:],
        "type": good[:2] + b"\x42" + good[3:],
        "ndim": good[:3] + b"\x09" + good[4:],
        "empty": b"",
        "header": good[:6],
        "huge": bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**20, 2**20, 2**20),
    }
    for name, data in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        with pytest.raises(VistokError, match=r"\S"):
            read_idx(p)
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(VistokError, match="cannot read"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(VistokError, match="does not exist"):
        read_idx(tmp_path / "missing")


def test_load_split_and_dataset(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    images[:, 0, :] = images[:, -1, :] = images[:, :, 0] = images[:, :, -1] = 0  # black border
    labels = (np.arange(12) % 3).astype(np.uint8)
    folder = tmp_path / "fashion-mnist"
    _write_set(folder, images, labels)
    _write_set(folder, images[:4], labels[:4], split="test", gz=False)
    assert is_idx_folder(folder) and not is_idx_folder(tmp_path)
    x, y = load_idx_split(folder, "test")
    assert x.shape == (4, 28, 28) and y.dtype == np.int64 and list(y) == [0, 1, 2, 0]
    with pytest.raises(VistokError, match="split"):
        load_idx_split(folder, "val")
    ds = IdxImageDataset(folder, size=32)
    assert len(ds) == 12 and ds.kinds == ["image"] * 12 and ds.class_names[:3] == ["T-shirt/top", "Trouser", "Pullover"]
    item = ds[5]
    assert item["video"].shape == (3, 1, 32, 32) and item["label"] == 2
    assert torch.all(item["video"][:, :, :2] == -1)  # padded with the border colour (black)
    video, lab = ds.batch([0, 5])
    assert video.shape == (2, 3, 1, 32, 32) and lab.tolist() == [0, 2]
    back = unfit_images(video)
    assert torch.allclose(back, torch.from_numpy(images[[0, 5]]).float() / 127.5 - 1, atol=1e-6)
    small = fit_images(torch.from_numpy(images[:2]), 16)
    assert small.shape == (2, 3, 1, 16, 16) and small.min() >= -1 and small.max() <= 1
    # mismatched labels
    _write_set(tmp_path / "bad", images, labels[:5])
    with pytest.raises(VistokError, match="labels"):
        load_idx_split(tmp_path / "bad")


def test_trainer_reads_idx_folder(tmp_path):
    from vistok.train.batches import build_dataset
    from vistok.train.config import load_train_config

    rng = np.random.default_rng(1)
    _write_set(tmp_path / "set", rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), (np.arange(20) % 10).astype(np.uint8))
    cfg = load_train_config("tiny", [f"data.path={tmp_path / 'set'}", "data.size=32", "data.image_fraction=1.0"])
    ds = build_dataset(cfg)
    assert isinstance(ds, IdxImageDataset) and len(ds) == 20 and ds[0]["video"].shape == (3, 1, 32, 32)


def test_classifier_learns_separable_classes():
    g = torch.Generator().manual_seed(0)
    n = 240
    labels = torch.arange(n) % 3
    images = torch.rand(n, 1, 12, 12, generator=g) * 0.4 - 1.0
    for c in range(3):  # class c: a bright bar in band c
        images[labels == c, :, 4 * c : 4 * c + 3, :] = 0.8
    model = train_classifier(images, labels, epochs=4, batch_size=32, lr=3e-3, augment=False)
    assert accuracy(model, images, labels) > 0.95
    per = per_class_accuracy(model, images, labels, 4)
    assert all(p > 0.9 for p in per[:3]) and np.isnan(per[3])
    # shuffled labels cannot be predicted: the measure is not trivially high
    assert accuracy(model, images, labels[torch.randperm(n, generator=g)]) < 0.6


def test_classifier_errors():
    with pytest.raises(VistokError):
        SmallConvClassifier(1)
    with pytest.raises(VistokError, match="one label per image"):
        train_classifier(torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    with pytest.raises(VistokError, match="labels must lie"):
        train_classifier(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 5]), num_classes=3)
    with pytest.raises(VistokError, match="empty"):
        accuracy(SmallConvClassifier(2), torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
