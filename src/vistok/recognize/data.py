"""Labelled data for recognition, in memory: pixels, labels and (when asked) a tokenizer's tokens.

:func:`load_recognition_set` reads a class-folder tree or an IDX folder (:mod:`vistok.data.labelled`)
at one size and clip length into uint8 pixels ``(n c t s s)``, encodes them with the tokenizer when
one is given, and keeps both in a cache file keyed by everything they depend on (the data's
files, sizes and modification times, the split, the geometry, the tokenizer's id), so a series of
runs on one data set decodes and tokenizes it once. Token inputs and token targets are computed
from exactly the pixels the pixel models see.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vistok.atomic import atomic_output
from vistok.data.idx import is_idx_folder
from vistok.data.labelled import LabelledSource, iter_labelled_items, open_labelled
from vistok.errors import VistokError
from vistok.metrics.store import vistok_home
from vistok.tokenizers.base import Tokenizer
from vistok.train.seeds import derive_seed

CACHE_VERSION = 1


@dataclass
class RecognitionSet:
    """``pixels (n c t s s)`` uint8, ``labels (n,)`` int64, ``tokens (n t' h' w')`` int64 or ``None``."""

    pixels: torch.Tensor
    labels: torch.Tensor
    tokens: torch.Tensor | None
    class_names: list[str]
    paths: list[str]
    tokenizer_id: str | None = None
    vocab_size: int | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def frames(self) -> int:
        return int(self.pixels.shape[2])

    @property
    def size(self) -> int:
        return int(self.pixels.shape[-1])

    def video(self, items: torch.Tensor) -> torch.Tensor:
        """Items as float clips in [-1, 1]."""
        return self.pixels[items].float().div(127.5).sub(1.0)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    return video.float().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def _fingerprint(source: LabelledSource, split: str, limit: int | None, tokenizer_id: str | None) -> str:
    h = hashlib.sha256()
    head = {"v": CACHE_VERSION, "root": str(source.root.resolve()), "kind": source.kind, "split": split,
            "size": source.size, "frames": source.frames, "limit": limit, "tokenizer": tokenizer_id}
    h.update(json.dumps(head, sort_keys=True).encode())
    if source._idx is not None:
        files = sorted(p for p in source.root.iterdir() if p.is_file())
    else:
        files = [f[0] for f in source._files]
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _per_class_limit(source: LabelledSource, limit: int) -> None:
    """Keep the first ``limit`` files of each class (a folder tree's ``limit`` is per class)."""
    kept, seen = [], {}
    for entry in source._files:
        seen[entry[1]] = seen.get(entry[1], 0) + 1
        if seen[entry[1]] <= limit:
            kept.append(entry)
    source._files = kept
    source.items = len(kept)


@torch.no_grad()
def encode_tokens(tokenizer: Tokenizer, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """``(n c t s s)`` uint8 clips -> ``(n t' h' w')`` int64 tokens, in batches."""
    dtype = next(tokenizer.parameters()).dtype
    return torch.cat([tokenizer.encode(pixels[i : i + batch_size].float().div(127.5).sub(1.0).to(dtype)).cpu().long()
                      for i in range(0, len(pixels), batch_size)])


def check_classes(class_names: list[str], labels: torch.Tensor, root: str | Path, *, min_classes: int = 2) -> None:
    """Refuse an empty class, or fewer than ``min_classes`` classes (a classifier needs two), naming them."""
    if len(class_names) < min_classes:
        raise VistokError(f"{root} has {len(class_names)} class(es) ({', '.join(class_names) or 'none'}); "
                          "a classifier needs at least two")
    counts = torch.bincount(labels, minlength=len(class_names)).tolist()
    empty = [n for n, c in zip(class_names, counts) if c == 0]
    if empty:
        raise VistokError(f"{root}: class folder(s) {', '.join(repr(e) for e in empty)} hold no usable media")


def load_recognition_set(
    root: str | Path,
    *,
    size: int,
    frames: int = 1,
    split: str = "train",
    limit: int | None = None,
    tokenizer: Tokenizer | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    require_classes: bool = True,
) -> RecognitionSet:
    """Read (or take from the cache) a labelled set; see the module doc. ``limit``: the first
    ``limit`` items of an IDX split, or of each class of a folder tree. ``cache_dir=""`` turns the
    cache off."""
    root = Path(root)
    if not root.exists():
        raise VistokError(f"{root} does not exist")
    source = open_labelled(root, size=size, frames=frames, split=split, limit=limit if is_idx_folder(root) else None)
    if limit is not None and source._files is not None:
        _per_class_limit(source, limit)
    tok_id = tokenizer.model_id() if tokenizer is not None else None
    if tokenizer is not None:
        if tokenizer.vocab_size is None:
            raise VistokError(f"{type(tokenizer).__name__} has a continuous bottleneck: it gives no tokens")
        sc, tc = tokenizer.spatial_compression, tokenizer.temporal_compression
        if size % sc or (frames - 1) % tc:
            raise VistokError(f"size {size} and frames {frames} do not fit the tokenizer (sides a multiple of {sc}, "
                              f"frames 1 + {tc}k)")
    cache = None
    if cache_dir != "":
        base = Path(cache_dir) if cache_dir is not None else vistok_home() / "cache" / "recognize"
        cache = base / f"{_fingerprint(source, split, limit, tok_id)}.npz"
        if cache.is_file():
            try:
                return _read_cache(cache)
            except (OSError, ValueError, KeyError, VistokError):
                pass  # a damaged cache file is rebuilt below
    pixels, labels, paths, tokens = [], [], [], []
    done = 0
    with torch.no_grad():
        for video, lab, names in iter_labelled_items(source, batch_size):
            pixels.append(to_uint8(video))
            labels.append(lab)
            paths.extend(names)
            if tokenizer is not None:
                tokens.append(encode_tokens(tokenizer, pixels[-1], batch_size))
            done += len(lab)
            if progress is not None:
                progress(done, source.items)
    if not labels:
        raise VistokError(f"no item under {root} could be decoded ({len(source.skipped or [])} skipped)")
    out = RecognitionSet(torch.cat(pixels), torch.cat(labels), torch.cat(tokens) if tokens else None,
                         list(source.class_names), paths, tok_id, tokenizer.vocab_size if tokenizer is not None else None)
    if require_classes:
        check_classes(out.class_names, out.labels, root)
    if cache is not None:
        _write_cache(cache, out)
    return out


def _write_cache(path: Path, s: RecognitionSet) -> None:
    meta = {"class_names": s.class_names, "paths": s.paths, "tokenizer_id": s.tokenizer_id, "vocab_size": s.vocab_size}
    arrays = {"pixels": s.pixels.numpy(), "labels": s.labels.numpy(),
              "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    if s.tokens is not None:
        arrays["tokens"] = s.tokens.numpy().astype(np.int32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
    except (OSError, VistokError):
        pass  # a cache that cannot be written only costs time next run


def _read_cache(path: Path) -> RecognitionSet:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(bytes(z["meta"]).decode())
        tokens = torch.from_numpy(z["tokens"].astype(np.int64)) if "tokens" in z.files else None
        return RecognitionSet(torch.from_numpy(z["pixels"].copy()), torch.from_numpy(z["labels"].copy()), tokens,
                              meta["class_names"], meta["paths"], meta["tokenizer_id"], meta["vocab_size"])


def labelled_items(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """The items a run with ``seed`` and ``label_fraction=fraction`` trains on (a :func:`label_subset`
    drawn with a seed derived from the run's), so other methods can use exactly the same labels."""
    return label_subset(labels, fraction, derive_seed(seed, 2))


def label_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of ``fraction`` of the items of every class (at least one each), chosen at random
    with ``seed``, sorted: the labelled share of a low-label run."""
    if fraction >= 1.0:
        return torch.arange(len(labels))
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        k = max(1, round(fraction * len(members)))
        chosen.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(chosen).sort().values

