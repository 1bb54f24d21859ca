"""Token data for the language models: token-set files and folders of ``vistok encode`` files.

**Token set** (one ``.npz``, for labelled data sets of any size; written by :func:`save_token_set`):

* ``indices``: ``(N, t', h', w')`` uint16 (vocabulary <= 65536) or uint32 tokens;
* ``labels``: ``(N,)`` int64 class labels (absent for unlabelled sets);
* ``meta``: UTF-8 JSON bytes (uint8 array), the keys of :func:`vistok.files.save_tokens`:
  ``model_id`` (the tokenizer's id; required), ``vocab_size`` (required), ``class_names`` (a list;
  required with labels -- ``num_classes`` alone is accepted and gives names ``"0"``, ``"1"``, ...),
  plus anything else (``kind``, ``frames``, ``height``, ``width``, ``source``, ...), and
  ``format: "vistok-token-set"`` with ``format_version``.

**A folder of** ``vistok encode`` **files** (each ``indices (t', h', w')`` + ``meta``): files directly in
the folder are unlabelled; or one sub-folder per class (``root/<class name>/*.npz``, classes sorted
by name -> labels 0, 1, ..., as for labelled media in :mod:`vistok.data.labelled`).

Either way every grid must have one shape, every token must be below the vocabulary, and all tokens
must come from one tokenizer (one ``model_id``): mixing tokenizers is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vistok.errors import VistokError
from vistok.files import save_npz

FORMAT = "vistok-token-set"
FORMAT_VERSION = 1


@dataclass
class TokenSet:
    """Tokens in memory: ``indices (N t' h' w')`` int64, ``labels (N,)`` int64 or ``None``, ``meta``."""

    indices: np.ndarray
    labels: np.ndarray | None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def model_id(self) -> str:
        return str(self.meta["model_id"])

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names") or [])

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels is not None else 0

    @property
    def grid(self) -> tuple[int, int, int]:
        return tuple(int(g) for g in self.indices.shape[1:])


def _check_meta(meta: Any, where: str) -> dict[str, Any]:
    if not isinstance(meta, dict):
        raise VistokError(f"{where}: meta must be a mapping, got {type(meta).__name__}")
    vocab = meta.get("vocab_size")
    if isinstance(vocab, bool) or not isinstance(vocab, int) or vocab < 2:
        raise VistokError(f"{where}: meta['vocab_size'] must be an integer >= 2, got {vocab!r}")
    if vocab > 2**32:
        raise VistokError(f"{where}: vocab_size {vocab} is larger than uint32 tokens can hold")
    if not isinstance(meta.get("model_id"), str) or not meta["model_id"]:
        raise VistokError(f"{where}: meta['model_id'] (the id of the tokenizer the tokens came from) is required")
    return meta


def _check_indices(indices: Any, vocab: int, where: str, ndim: int = 4) -> np.ndarray:
    layout = "(N, t', h', w')" if ndim == 4 else "(t', h', w')"
    if not isinstance(indices, np.ndarray):
        try:
            indices = np.asarray(indices.cpu() if hasattr(indices, "cpu") else indices)
        except Exception:
            raise VistokError(f"{where}: indices must be an array {layout}, got {type(indices).__name__}") from None
    if indices.ndim != ndim:
        raise VistokError(f"{where}: indices must have shape {layout}, got {indices.shape}")
    if indices.dtype.kind not in "iu":
        raise VistokError(f"{where}: indices must be integers, got {indices.dtype}")
    if indices.size == 0:
        raise VistokError(f"{where}: no tokens (indices of shape {indices.shape})")
    lo, hi = int(indices.min()), int(indices.max())
    if lo < 0 or hi >= vocab:
        raise VistokError(f"{where}: token values span [{lo}, {hi}], outside the vocabulary [0, {vocab})")
    return indices.astype(np.int64, copy=False)


def _check_labels(labels: Any, n: int, meta: dict, where: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
    if labels.shape != (n,):
        raise VistokError(f"{where}: labels must have shape ({n},), one per grid; got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise VistokError(f"{where}: labels must be integers, got {labels.dtype}")
    names = meta.get("class_names")
    if names is None:
        k = meta.get("num_classes")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise VistokError(f"{where}: labelled tokens need meta['class_names'] (or meta['num_classes'])")
        names = [str(i) for i in range(k)]
        meta["class_names"] = names
    if not isinstance(names, list) or not names or not all(isinstance(s, str) for s in names):
        raise VistokError(f"{where}: meta['class_names'] must be a non-empty list of strings")
    if meta.get("num_classes") not in (None, len(names)):
        raise VistokError(f"{where}: meta['num_classes'] = {meta['num_classes']} but {len(names)} class names")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= len(names):
        raise VistokError(f"{where}: labels span [{lo}, {hi}], outside the {len(names)} classes [0, {len(names)})")
    return labels.astype(np.int64, copy=False)


def save_token_set(path: str | Path, indices: Any, labels: Any = None, meta: dict[str, Any] | None = None) -> Path:
    """Validate and write a token set (see the module docstring) atomically to ``path`` (``.npz``).

    ``indices``: ``(N, t', h', w')`` integers (numpy or torch); ``labels``: ``(N,)`` or ``None``;
    ``meta``: at least ``model_id`` and ``vocab_size``, and ``class_names`` with labels.
    """
    p = Path(path)
    if p.suffix != ".npz":
        raise VistokError(f"token set file {p} must end in .npz")
    meta = dict(meta or {})
    _check_meta(meta, str(p))
    vocab = int(meta["vocab_size"])
    idx = _check_indices(indices, vocab, str(p))
    lab = _check_labels(labels, idx.shape[0], meta, str(p))
    meta.update(format=FORMAT, format_version=FORMAT_VERSION, count=int(idx.shape[0]), grid=list(idx.shape[1:]))
    if lab is not None:
        meta["num_classes"] = len(meta["class_names"])
    arrays = {
        "indices": idx.astype(np.uint16 if vocab <= 2**16 else np.uint32),
        "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
    }
    if lab is not None:
        arrays["labels"] = lab
    return save_npz(p, arrays)


def _read_npz(p: Path) -> tuple[np.ndarray, np.ndarray | None, dict]:
    try:
        with np.load(p, allow_pickle=False) as z:
            if "indices" not in z.files or "meta" not in z.files:
                raise VistokError(f"{p} is not a vistok token file: it holds {sorted(z.files)}, expected indices and meta")
            indices = z["indices"]
            labels = z["labels"] if "labels" in z.files else None
            meta = json.loads(bytes(z["meta"]).decode())
    except FileNotFoundError:
        raise VistokError(f"token file {p} does not exist") from None
    except VistokError:
        raise
    except Exception as e:  # zip / json errors: not our file
        raise VistokError(f"{p} is not a vistok token file: {e}") from None
    return indices, labels, meta


def load_token_set(path: str | Path) -> TokenSet:
    """Read a token set written by :func:`save_token_set`, validating it as when it was written."""
    p = Path(path)
    indices, labels, meta = _read_npz(p)
    if indices.ndim == 3:
        raise VistokError(f"{p} holds one clip's tokens (from `vistok encode`), not a token set; "
                          "pass a folder of such files, or use open_token_data")
    _check_meta(meta, str(p))
    idx = _check_indices(indices, int(meta["vocab_size"]), str(p))
    return TokenSet(idx, _check_labels(labels, idx.shape[0], meta, str(p)), meta)


def load_token_files(source: str | Path | list[str | Path]) -> TokenSet:
    """Gather ``vistok encode`` token files: a folder (files, or one sub-folder per class) or a list
    of files (unlabelled). All must share one grid, vocabulary and tokenizer."""
    class_names: list[str] = []
    if isinstance(source, (list, tuple)):
        entries = [(Path(f), None) for f in source]
        where = "the token files"
    else:
        root = Path(source)
        where = str(root)
        if not root.is_dir():
            raise VistokError(f"{root} is not a folder of token files")
        direct = sorted(root.glob("*.npz"))
        subdirs = sorted(d for d in root.iterdir() if d.is_dir() and any(d.glob("*.npz")))
        if direct and subdirs:
            raise VistokError(f"{root} mixes token files and class sub-folders; use one layout")
        if subdirs:
            class_names = [d.name for d in subdirs]
            entries = [(f, label) for label, d in enumerate(subdirs) for f in sorted(d.glob("*.npz"))]
        else:
            entries = [(f, None) for f in direct]
    if not entries:
        raise VistokError(f"no .npz token files in {where}")
    grids, labels = [], []
    first: tuple[Path, dict] | None = None
    for f, label in entries:
        indices, _, meta = _read_npz(f)
        _check_meta(meta, str(f))
        if first is None:
            first = (f, meta)
        ref_path, ref = first
        if meta["model_id"] != ref["model_id"]:
            raise VistokError(
                f"{f} was encoded by tokenizer {meta['model_id'][:12]}…, but {ref_path} by "
                f"{ref['model_id'][:12]}…: a language model learns the tokens of one tokenizer"
            )
        if meta["vocab_size"] != ref["vocab_size"]:
            raise VistokError(f"{f}: vocabulary {meta['vocab_size']} differs from {ref_path}'s {ref['vocab_size']}")
        grid = _check_indices(indices, int(meta["vocab_size"]), str(f), ndim=3)
        if grids and grid.shape != grids[0].shape:
            raise VistokError(f"{f}: token grid {grid.shape} differs from {ref_path}'s {grids[0].shape}; "
                              "encode every item at one size and frame count")
        grids.append(grid)
        labels.append(label)
    meta = {k: v for k, v in first[1].items() if k not in ("source",)}
    if class_names:
        meta["class_names"] = class_names
        meta["num_classes"] = len(class_names)
    lab = np.asarray(labels, dtype=np.int64) if class_names else None
    return TokenSet(np.stack(grids), lab, meta)


def open_token_data(path: str | Path) -> TokenSet:
    """A token-set file, a single ``vistok encode`` file, or a folder of encode files."""
    p = Path(path)
    if p.is_dir():
        return load_token_files(p)
    if not p.exists():
        raise VistokError(f"token data {p} does not exist")
    indices, _, _ = _read_npz(p)
    return load_token_files([p]) if indices.ndim == 3 else load_token_set(p)
