"""Labelled media collections, for tokenizing a whole data set with its classes at once.

Two layouts are understood:

- an **IDX folder** (MNIST, Fashion-MNIST, ...: ``train-images-idx3-ubyte[.gz]`` and labels), see
  :mod:`vistok.data.idx`;
- a **class-folder tree** (``root/<class name>/<file>``, as torchvision's ``ImageFolder``): every
  sub-folder is a class (sorted by name -> label 0, 1, ...), and each image or video inside is one
  item; videos give their first ``frames`` frames, so every item has the same token grid.

:func:`iter_labelled_batches` yields ``(video (b c t h w), labels (b,))`` batches of either kind at
one size, for ``vistok encode-set``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from vistok.data.datasets import check_clip_length, make_clip, media_files, skipped_summary
from vistok.data.idx import IdxImageDataset, is_idx_folder
from vistok.data.images import IMAGE_EXTENSIONS, probe_image
from vistok.data.video import VIDEO_EXTENSIONS, probe_video
from vistok.errors import VistokError


@dataclass
class LabelledSource:
    """What :func:`open_labelled` found: item count, class names and how to read batches."""

    kind: str  # "idx" | "folders"
    root: Path
    class_names: list[str]
    items: int
    frames: int
    size: int
    _idx: IdxImageDataset | None = None
    _files: list[tuple[Path, int, str, int]] | None = None  # (path, label, kind, total frames)
    skipped: list[tuple[str, str]] | None = None


def open_labelled(root: str | Path, *, size: int, frames: int = 1, split: str = "train", limit: int | None = None) -> LabelledSource:
    """Index a labelled collection at ``root`` (IDX folder or class folders).

    ``size``: square side the items are brought to (IDX: padded or resized; files: resized to cover
    and centre-cropped). ``frames``: clip length for videos (1 + 4k); images are 1-frame clips and
    a tree may not mix images and videos unless ``frames`` is 1 (then videos give their first frame).
    """
    root = Path(root)
    check_clip_length(frames, "frames")
    if not isinstance(size, int) or size < 1:
        raise VistokError(f"size must be a positive integer; got {size!r}")
    if limit is not None and limit < 1:
        raise VistokError(f"limit must be at least 1 (or unset for every item); got {limit}")
    if not root.is_dir():
        raise VistokError(f"{root} is not a folder (expected an IDX folder or one sub-folder per class)")
    if is_idx_folder(root):
        ds = IdxImageDataset(root, split=split, size=size, limit=limit)
        if frames != 1:
            raise VistokError(f"{root} holds images; use frames=1")
        return LabelledSource("idx", root, ds.class_names, len(ds), 1, size, _idx=ds)
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise VistokError(f"{root} has no class sub-folders and is not an IDX folder")
    files: list[tuple[Path, int, str, int]] = []
    skipped: list[tuple[str, str]] = []
    for label, folder in enumerate(classes):
        if limit is not None and len(files) >= limit:
            break
        for f in media_files(folder):
            suffix = f.suffix.lower()
            try:
                if suffix in IMAGE_EXTENSIONS:
                    probe_image(f)
                    if frames != 1:
                        skipped.append((str(f), f"an image, but clips of {frames} frames were asked for"))
                        continue
                    files.append((f, label, "image", 1))
                elif suffix in VIDEO_EXTENSIONS:
                    n = probe_video(f).frames
                    if n < frames:
                        skipped.append((str(f), f"too short: {n} frame(s), {frames} needed"))
                        continue
                    files.append((f, label, "video", n))
                else:
                    skipped.append((str(f), "not a video or image file"))
            except (VistokError, OSError) as e:
                skipped.append((str(f), str(e)))
            if limit is not None and len(files) >= limit:
                break
    if skipped:
        warnings.warn(f"skipped {len(skipped)} file(s) under {root}:\n{skipped_summary(skipped)}", stacklevel=2)
    if not files:
        raise VistokError(f"no usable media under the class folders of {root}")
    return LabelledSource("folders", root, [c.name for c in classes], len(files), frames, size, _files=files, skipped=skipped)


def iter_labelled_batches(source: LabelledSource, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(video (b 3 t size size) in [-1, 1], labels (b,) int64)`` in index order."""
    for video, labels, _ in iter_labelled_items(source, batch_size):
        yield video, labels


def iter_labelled_items(source: LabelledSource, batch_size: int = 64) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
    """``(video (b 3 t size size) in [-1, 1], labels (b,) int64, names)`` in index order; ``names``
    are the items' file paths (``root:split[i]`` for an IDX folder). A file whose header probed
    fine over damaged data is skipped with a warning and recorded in ``source.skipped``."""
    if batch_size < 1:
        raise VistokError(f"batch_size must be >= 1; got {batch_size}")
    for start in range(0, source.items, batch_size):
        stop = min(start + batch_size, source.items)
        if source._idx is not None:
            video, labels = source._idx.batch(range(start, stop))
            yield video, labels, [source._idx.entries[i].path for i in range(start, stop)]
            continue
        clips, labels, names = [], [], []
        for path, label, kind, total in source._files[start:stop]:
            try:
                video, _ = make_clip(
                    str(path), kind, total_frames=total, frames=source.frames, stride=1, size=source.size, random=False
                )
            except VistokError as e:  # a header that probed fine over damaged data: skip it by name
                source.skipped = (source.skipped or []) + [(str(path), str(e))]
                warnings.warn(f"skipping {path}: {e}", stacklevel=2)
                continue
            clips.append(video)
            labels.append(label)
            names.append(str(path))
        if clips:
            yield torch.stack(clips), torch.tensor(labels, dtype=torch.int64), names
