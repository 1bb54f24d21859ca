"""Labelled image sets in the IDX format of MNIST and its kin (Fashion-MNIST, KMNIST, EMNIST).

Debian's ``dataset-fashion-mnist`` package installs Fashion-MNIST (70 000 labelled 28 x 28 grey
images) under ``/usr/share/datasets/fashion-mnist``: ``train-images-idx3-ubyte.gz`` and
``train-labels-idx1-ubyte.gz`` (60 000), ``t10k-*`` (10 000). The IDX format is a 4-byte magic
(two zero bytes, a type code, the number of dimensions), one big-endian uint32 per dimension, then
the array in C order.

``IdxImageDataset`` serves such a set to the tokenizer trainer as 1-frame clips ``(3, 1, s, s)`` in
[-1, 1] with their labels: grey is replicated to RGB (so every tool that takes RGB works) and the
images are padded (centred, with the border colour) up to ``size`` -- or resized (antialiased)
when ``size`` is smaller than the images -- so the tokenizer's stride divides the size.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch

from vistok.data.datasets import EntryDataset, MediaEntry
from vistok.data.transforms import resize
from vistok.errors import VistokError

# IDX type codes -> numpy big-endian dtypes.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_MAX_ELEMENTS = 2**31  # refuse headers that claim absurd sizes before reading anything

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SPLITS = {"train": "train", "test": "t10k"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a native-endian numpy array.

    Raises ``VistokError`` naming the file for a wrong magic, an unknown type, or a size that
    disagrees with the header (truncated or padded files).
    """
    p = Path(path)
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except FileNotFoundError:
        raise VistokError(f"{p} does not exist") from None
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise VistokError(f"cannot read {p}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise VistokError(f"{p} is not an IDX file (bad magic {raw[:4].hex() or 'empty'})")
    type_code, ndim = raw[2], raw[3]
    if type_code not in _IDX_TYPES:
        raise VistokError(f"{p}: unknown IDX element type 0x{type_code:02x}")
    if not 1 <= ndim <= 4 or len(raw) < 4 + 4 * ndim:
        raise VistokError(f"{p}: IDX header claims {ndim} dimensions (expected 1-4) or is truncated")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_TYPES[type_code])
    count = math.prod(dims)  # Python integers: four 32-bit sizes cannot wrap around
    if count > _MAX_ELEMENTS:
        raise VistokError(f"{p}: IDX header claims {dims} ({count} elements), more than this reader accepts")
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise VistokError(f"{p}: IDX header says {dims} ({count * dtype.itemsize} bytes) but the file holds {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise VistokError(f"{folder} has no {stem}[.gz] (an MNIST-style IDX folder holds train-* and t10k-* files)")


def is_idx_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding MNIST-style ``train-images-idx3-ubyte[.gz]``."""
    p = Path(path)
    return p.is_dir() and any((p / f"train-images-idx3-ubyte{s}").is_file() for s in ("", ".gz"))


def load_idx_split(folder: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``(images (n h w) uint8, labels (n,) int64)`` of the ``train`` or ``test`` split of an IDX folder."""
    if split not in SPLITS:
        raise VistokError(f"split must be one of {sorted(SPLITS)}; got {split!r}")
    folder = Path(folder)
    if not folder.is_dir():
        hint = " (install Debian's dataset-fashion-mnist)" if folder == FASHION_MNIST_DIR else ""
        raise VistokError(f"{folder} is not a folder{hint}")
    images = read_idx(_find(folder, f"{SPLITS[split]}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{SPLITS[split]}-labels-idx1-ubyte"))
    if images.ndim != 3 or images.dtype != np.uint8:
        raise VistokError(f"{folder}: expected uint8 images of shape (n, h, w); got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise VistokError(f"{folder}: {len(images)} images but labels of shape {labels.shape}")
    return images, labels.astype(np.int64)


def fit_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(n h w)`` uint8 -> ``(n 3 1 size size)`` float in [-1, 1]: centred padding with the border
    value (the most common value on the image edges) when ``size`` is larger, antialiased resize
    when smaller."""
    n, h, w = images.shape
    x = images.float().div(127.5).sub(1.0)
    if size >= h and size >= w:
        edges = torch.cat([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], dim=1)
        border = float(torch.mode(edges.flatten()).values) / 127.5 - 1.0
        top, left = (size - h) // 2, (size - w) // 2
        out = torch.full((n, size, size), border)
        out[:, top : top + h, left : left + w] = x
        x = out
    else:
        x = resize(x[None], (size, size))[0].clamp(-1, 1)  # frames = images: (1 n h w)
    return x[:, None, None].expand(-1, 3, 1, -1, -1).contiguous()


def unfit_images(video: torch.Tensor, height: int = 28, width: int = 28) -> torch.Tensor:
    """Undo :func:`fit_images` for a batch ``(n c 1 s s)``: the mean over channels, centre-cropped
    (or resized) back to ``height x width``, as ``(n h w)`` float in [-1, 1]."""
    x = video.float().mean(dim=1)[:, 0]  # (n s s)
    s = x.shape[-1]
    if s >= height and s >= width:
        top, left = (s - height) // 2, (s - width) // 2
        return x[:, top : top + height, left : left + width]
    return resize(x[None], (height, width))[0]


class IdxImageDataset(EntryDataset):
    """One split of an IDX folder as 1-frame clips for ``MixedBatchSampler`` / the trainer.

    Items are ``{"video": (3 1 size size) float in [-1, 1], "label": int, "path": str, "kind":
    "image", "start": 0}``; ``class_names`` comes from the folder (Fashion-MNIST's names for the
    Debian path or a folder named ``fashion-mnist``, else ``"0"``..``"9"``-style numbers).
    """

    def __init__(self, folder: str | Path, *, split: str = "train", size: int = 32, limit: int | None = None, seed: int | None = None):
        if not isinstance(size, int) or size < 1:
            raise VistokError(f"size must be a positive int; got {size!r}")
        self.folder = Path(folder)
        images, labels = load_idx_split(self.folder, split)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        self.images = torch.from_numpy(images.copy())
        self.labels = torch.from_numpy(labels)
        self.size, self.split, self.seed, self.epoch = size, split, seed, 0
        n_classes = int(self.labels.max()) + 1 if len(self.labels) else 0
        named = "fashion" in self.folder.name.lower() and n_classes <= len(FASHION_MNIST_CLASSES)
        self.class_names = list(FASHION_MNIST_CLASSES[:n_classes]) if named else [str(i) for i in range(n_classes)]
        name = f"{self.folder}:{split}"
        self.entries = [MediaEntry(f"{name}[{i}]", "image", 1) for i in range(len(self.images))]

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        video = fit_images(self.images[index : index + 1], self.size)[0]
        return {"video": video, "label": int(self.labels[index]), "path": self.entries[index].path, "kind": "image", "start": 0}

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """``(video (b 3 1 s s), labels (b,))`` for many indices at once (faster than items)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return fit_images(self.images[idx], self.size), self.labels[idx]
