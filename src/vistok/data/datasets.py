"""Map-style dataset of clips from a folder of videos and images, and a sampler for joint training.

MAGVIT-v2 (Sec. 3.1) and OmniTokenizer (progressive training) train one tokenizer, one vocabulary,
on images and videos together: an image is a 1-frame clip. A batch must still be homogeneous in
``t`` to be stacked, so ``MixedBatchSampler`` makes every batch all-clips or all-images, choosing
clip batches for a ``video_fraction`` of the steps.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset, Sampler

from vistok.data.images import IMAGE_EXTENSIONS, probe_image, read_image
from vistok.data.transforms import prepare_clip
from vistok.data.video import VIDEO_EXTENSIONS, probe_video, read_video
from vistok.errors import VistokError

logger = logging.getLogger(__name__)

# How many skipped files a warning or error message names before summarizing the rest.
_MAX_LINES = 20


@dataclass(frozen=True)
class MediaEntry:
    """One usable file: ``frames`` is the video's frame count (1 for an image)."""

    path: str
    kind: str  # "video" | "image"
    frames: int


def check_clip_length(frames: int, what: str = "frames") -> None:
    """The causal tokenizers encode the first frame alone and then groups of 4: clips have 1 + 4k."""
    if isinstance(frames, int) and frames >= 1 and (frames - 1) % 4 == 0:
        return
    near = 1 + 4 * ((frames - 1) // 4) if isinstance(frames, int) and frames > 1 else None
    hint = f" (nearest: {near} or {near + 4})" if near else ""
    raise VistokError(f"{what} must be 1 + 4k (1, 5, 9, 13, 17, ...); got {frames!r}{hint}")


def check_size(size) -> tuple[int, int]:
    """``size`` (an int for square, or ``(height, width)``) -> ``(height, width)``."""
    sizes = (size, size) if isinstance(size, int) else tuple(size) if isinstance(size, (tuple, list)) else ()
    if len(sizes) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise VistokError(f"size must be a positive int or (height, width); got {size!r}")
    return sizes


def media_files(paths_or_folder) -> list[Path]:
    """Expand a folder (recursively, sorted) or a list of files/folders into files.

    Hidden files and folders (name starting with '.') are ignored: they are editor, OS and VCS
    droppings (.DS_Store, .git), never training data.
    """
    items = [paths_or_folder] if isinstance(paths_or_folder, (str, os.PathLike)) else list(paths_or_folder)
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = (f for f in p.rglob("*") if f.is_file())
            files.extend(sorted(f for f in found if not any(part.startswith(".") for part in f.relative_to(p).parts)))
        elif p.is_file():
            files.append(p)
        else:
            raise VistokError(f"{p} does not exist; expected a folder or a video/image file")
    return files


def check_augment(scale, grayscale, sizes: tuple[int, int]) -> tuple[int | None, float]:
    """Validated ``(scale, grayscale)``: the shorter side to resize to before cropping (at least the
    crop's longer side) and the share of clips made grey."""
    if scale is not None and (not isinstance(scale, int) or scale < max(sizes)):
        raise VistokError(f"scale must be an integer >= the crop size {max(sizes)} (or unset); got {scale!r}")
    if not 0.0 <= float(grayscale) <= 1.0:
        raise VistokError(f"grayscale must be in [0, 1]; got {grayscale!r}")
    return scale, float(grayscale)


def skipped_summary(skipped: Sequence[tuple[str, str]]) -> str:
    """Every skipped file named, one line per file while there are few, else grouped by reason (one
    line per reason listing its files), so a command-line user sees each name however many there are."""
    if len(skipped) <= _MAX_LINES:
        return "\n".join(f"  {path}: {reason}" for path, reason in skipped)
    groups: dict[str, list[str]] = {}
    for path, reason in skipped:
        groups.setdefault(reason, []).append(path)
    return "\n".join(f"  {reason} ({len(paths)} file(s)): {', '.join(paths)}" for reason, paths in groups.items())


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across runs and processes, unlike ``hash`` of strings)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = ((h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def make_clip(
    source,
    kind: str,
    *,
    total_frames: int,
    frames: int,
    stride: int,
    size: int | tuple[int, int],
    image_frames: int = 1,
    random: bool = True,
    generator: torch.Generator | None = None,
    scale: int | None = None,
    grayscale: float = 0.0,
) -> tuple[torch.Tensor, int]:
    """Decode one training clip from a file or encoded bytes: ``(video (c t h w) in [-1, 1], start)``.

    Videos: ``frames`` frames every ``stride`` from a start drawn uniformly over the
    ``total_frames`` the source has (or 0 when ``random`` is False). Images: a 1-frame clip, repeated
    to ``image_frames``. ``scale`` and ``grayscale``: see :func:`~vistok.data.transforms.prepare_clip`.
    Shared by ``ClipDataset`` and ``ShardDataset`` so both sample alike.
    """
    span = (frames - 1) * stride + 1
    if kind == "video":
        if total_frames < span:
            raise VistokError(
                f"too short: {total_frames} frame(s), a clip of {frames} frames at stride {stride} needs {span}"
            )
        start = int(torch.randint(0, total_frames - span + 1, (1,), generator=generator)) if random else 0
        pixels = read_video(source, start=start, num_frames=frames, stride=stride)
    elif kind == "image":
        start = 0
        pixels = read_image(source)[None]  # (1 h w 3): an image is a 1-frame clip
    else:
        raise VistokError(f"kind must be 'video' or 'image'; got {kind!r}")
    video = prepare_clip(pixels, size, random=random, generator=generator, scale=scale, grayscale=grayscale)
    if kind == "image" and image_frames > 1:
        video = video.expand(-1, image_frames, -1, -1).contiguous()  # a static clip
    return video, start


class EntryDataset(Dataset):
    """What clip datasets share: ``entries`` (``MediaEntry``), ``seed`` and ``epoch``; item ``i``'s
    random draws come from a generator seeded by ``(seed, epoch, i)``."""

    entries: list[MediaEntry]
    seed: int | None
    epoch: int

    @property
    def kinds(self) -> list[str]:
        """``"video"`` or ``"image"`` for each index (what ``MixedBatchSampler`` groups by)."""
        return [e.kind for e in self.entries]

    def set_epoch(self, epoch: int) -> None:
        """New random clips and crops per epoch when ``seed`` is set (a no-op for the draws otherwise)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.entries)

    def _generator(self, index: int) -> torch.Generator | None:
        if self.seed is None:
            return None
        return torch.Generator().manual_seed(_mix(self.seed, self.epoch, index))


class ClipDataset(EntryDataset):
    """Clips ``(3, t, size, size)`` in [-1, 1] from videos and images under a folder (recursive).

    Items are dicts ``{"video": float tensor (c t h w), "path": str, "kind": "video" | "image",
    "start": int}``. A video gives a clip of ``frames`` frames taken every ``stride`` frames, from a
    random start; an image gives a 1-frame clip (repeated to ``image_frames`` frames if asked, a static
    clip). Frames are resized (antialiased, aspect kept) to cover ``size`` -- or, with ``scale``, to a
    shorter side of ``scale`` pixels -- and cropped to it; with ``grayscale`` > 0 that share of the
    training clips is made grey (BT.601 luma in all three channels).

    ``random_crop``: True draws the clip start and the crop window at random (training); False takes the
    first clip and the centre window (evaluation). With ``seed`` set, the draws for item ``i`` come from
    a generator seeded by ``(seed, epoch, i)``: reproducible, and the same in any DataLoader worker;
    call ``set_epoch`` to get new clips each epoch. With ``seed=None`` they come from torch's global
    generator, which DataLoader seeds differently in every worker.

    The index is built by probing (container headers, no decoding). Files that cannot be used are
    skipped, named in a warning with the reason, and listed in ``skipped`` as ``(path, reason)``:
    unknown file types, unreadable or empty files, and videos too short for one clip. Short videos are
    skipped rather than looped: a loop adds a jump cut the tokenizer would learn as motion, and
    padding with a frozen last frame teaches it that videos stop. A file whose header is intact but
    whose data is damaged is found when it is decoded: it is then skipped (warned, added to
    ``skipped`` in that process) and the next usable item of the same kind is returned instead.
    """

    def __init__(
        self,
        paths_or_folder,
        *,
        frames: int = 17,
        size: int | tuple[int, int] = 64,
        stride: int = 1,
        random_crop: bool = True,
        image_frames: int = 1,
        seed: int | None = None,
        kinds: Iterable[str] = ("video", "image"),
        scale: int | None = None,
        grayscale: float = 0.0,
    ):
        check_clip_length(frames, "frames")
        check_clip_length(image_frames, "image_frames")
        if not isinstance(stride, int) or stride < 1:
            raise VistokError(f"stride must be an integer >= 1; got {stride!r}")
        sizes = check_size(size)
        kinds = tuple(kinds)
        if not kinds or any(k not in ("video", "image") for k in kinds):
            raise VistokError(f"kinds must be a non-empty subset of ('video', 'image'); got {kinds!r}")
        self.frames, self.size, self.stride = frames, sizes, stride
        self.random_crop, self.image_frames, self.seed = random_crop, image_frames, seed
        self.scale, self.grayscale = check_augment(scale, grayscale, sizes)
        self.epoch = 0
        self.span = (frames - 1) * stride + 1  # source frames one clip covers
        self.entries: list[MediaEntry] = []
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()
        files = media_files(paths_or_folder)
        for f in files:
            entry, reason = self._probe(f, kinds)
            if entry is not None:
                self.entries.append(entry)
            elif reason is not None:
                self.skipped.append((str(f), reason))
                # One warning summarizes the scan below; the full list goes to the log (and `skipped`).
                logger.info("skipping %s: %s", f, reason)
        if not self.entries:
            where = paths_or_folder if isinstance(paths_or_folder, (str, os.PathLike)) else f"{len(files)} paths"
            if not self.skipped:
                raise VistokError(f"no video or image files found in {where}")
            raise VistokError(
                f"no usable video or image in {where}; skipped {len(self.skipped)} file(s):\n{skipped_summary(self.skipped)}"
            )
        if self.skipped:
            warnings.warn(
                f"ClipDataset skipped {len(self.skipped)} of {len(files)} file(s):\n{skipped_summary(self.skipped)}",
                stacklevel=2,
            )

    def _probe(self, path: Path, kinds: tuple[str, ...]) -> tuple[MediaEntry | None, str | None]:
        """``(entry, None)`` if usable, ``(None, reason)`` if skipped, ``(None, None)`` if filtered out."""
        suffix = path.suffix.lower()
        try:
            if path.stat().st_size == 0:
                return None, "empty file"
            if suffix in VIDEO_EXTENSIONS:
                if "video" not in kinds:
                    return None, None
                info = probe_video(path)
                if info.frames < self.span:
                    return None, (
                        f"too short: {info.frames} frame(s), a clip of {self.frames} frames at stride "
                        f"{self.stride} needs {self.span}"
                    )
                return MediaEntry(str(path), "video", info.frames), None
            if suffix in IMAGE_EXTENSIONS:
                if "image" not in kinds:
                    return None, None
                probe_image(path)
                return MediaEntry(str(path), "image", 1), None
        except (VistokError, OSError) as e:
            return None, str(e)
        return None, f"not a video or image file (unrecognised suffix {suffix or '(none)'!r})"

    def _load(self, index: int) -> dict:
        entry = self.entries[index]
        video, start = make_clip(
            entry.path,
            entry.kind,
            total_frames=entry.frames,
            frames=self.frames,
            stride=self.stride,
            size=self.size,
            image_frames=self.image_frames,
            random=self.random_crop,
            generator=self._generator(index),
            scale=self.scale,
            grayscale=self.grayscale,
        )
        return {"video": video, "path": entry.path, "kind": entry.kind, "start": start}

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index %= len(self)
        kind = self.entries[index].kind
        for i in range(index, index + len(self)):  # lazily: almost always the first one loads
            i %= len(self)
            if i in self._bad or self.entries[i].kind != kind:
                continue
            try:
                return self._load(i)
            except VistokError as e:
                # Damage past the header shows only now; replacing the item with the next one of the
                # same kind keeps a MixedBatchSampler batch homogeneous and the run alive.
                self._bad.add(i)
                path = self.entries[i].path
                self.skipped.append((path, str(e)))
                warnings.warn(f"ClipDataset skipping {path}: {e}", stacklevel=2)
        raise VistokError(f"no {kind} in this dataset could be decoded; skipped:\n{skipped_summary(self.skipped)}")


def rank_and_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: explicit overrides, else torch.distributed, else torchrun's environment.

    Read when iteration starts, never cached. The environment fallback serves DataLoader workers
    started by spawn/forkserver: they have no process group but inherit ``RANK`` and ``WORLD_SIZE``.
    """
    if rank is not None or world_size is not None:
        if rank is None or world_size is None or not 0 <= rank < world_size:
            raise VistokError(f"pass both rank and world_size with 0 <= rank < world_size; got {rank=}, {world_size=}")
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class MixedBatchSampler(Sampler[list[int]]):
    """Batches of indices that are all clips or all images, clips on ``video_fraction`` of the steps.

    ``kinds``: a ``ClipDataset`` (its ``kinds``) or a list of ``"video"``/``"image"`` per index.
    Clip and image steps are interleaved evenly (with 0.25, every fourth step is a clip batch), not
    drawn at random, so the realized ratio is exact over any window and long image-only stretches
    cannot starve the temporal layers. ``image_batch_size`` may exceed ``batch_size``: an image
    costs about 1/t of a clip.

    Each kind's indices are shuffled per epoch (``seed`` + ``set_epoch``) and drawn in order, cycling
    with a new shuffle when exhausted, so the smaller pool repeats rather than ending the epoch.
    ``num_batches`` (per rank) defaults to the steps that show every clip about once (or every image
    when ``video_fraction`` is 0).

    Distributed: all ranks compute the same global sequence; step ``i`` is the same kind on every
    rank (so ``t`` agrees across ranks), and each rank takes its own disjoint slice of that step's
    ``world_size * batch_size`` indices. ``rank``/``world_size`` default to torch.distributed's,
    read when iteration starts.
    """

    def __init__(
        self,
        kinds,
        *,
        batch_size: int,
        video_fraction: float = 0.5,
        image_batch_size: int | None = None,
        num_batches: int | None = None,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        kinds = list(kinds.kinds if hasattr(kinds, "kinds") else kinds)
        if any(k not in ("video", "image") for k in kinds):
            raise VistokError("kinds must contain only 'video' and 'image'")
        if not 0.0 <= video_fraction <= 1.0:
            raise VistokError(f"video_fraction must be in [0, 1]; got {video_fraction}")
        image_batch_size = batch_size if image_batch_size is None else image_batch_size
        if batch_size < 1 or image_batch_size < 1:
            raise VistokError(f"batch sizes must be >= 1; got {batch_size}, {image_batch_size}")
        self.videos = [i for i, k in enumerate(kinds) if k == "video"]
        self.images = [i for i, k in enumerate(kinds) if k == "image"]
        if video_fraction > 0 and not self.videos:
            raise VistokError(f"video_fraction={video_fraction} but the dataset has no video clips; use 0")
        if video_fraction < 1 and not self.images:
            raise VistokError(f"video_fraction={video_fraction} but the dataset has no images; use 1.0")
        self.batch_size, self.image_batch_size = batch_size, image_batch_size
        self.video_fraction, self.seed, self.epoch = video_fraction, seed, 0
        self._rank, self._world = rank, world_size
        self._num_batches = num_batches
        if num_batches is not None and num_batches < 1:
            raise VistokError(f"num_batches must be >= 1; got {num_batches}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self._num_batches is not None:
            return self._num_batches
        _, world = rank_and_world(self._rank, self._world)
        if self.video_fraction > 0:
            clip_steps = math.ceil(len(self.videos) / (self.batch_size * world))
            return max(1, math.ceil(clip_steps / self.video_fraction))
        return max(1, math.ceil(len(self.images) / (self.image_batch_size * world)))

    def is_video_step(self, step: int) -> bool:
        """Whether global step ``step`` of an epoch is a clip batch (even interleaving)."""
        f = self.video_fraction
        return math.floor((step + 1) * f + 1e-9) > math.floor(step * f + 1e-9)

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = rank_and_world(self._rank, self._world)
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        pools = {"video": _Cycle(self.videos, g), "image": _Cycle(self.images, g)}
        for step in range(len(self)):
            kind = "video" if self.is_video_step(step) else "image"
            size = self.batch_size if kind == "video" else self.image_batch_size
            global_batch = pools[kind].take(size * world)
            yield global_batch[rank * size : (rank + 1) * size]


class _Cycle:
    """Endless draws from a list, reshuffled on every pass."""

    def __init__(self, items: list[int], g: torch.Generator):
        self.items, self.g, self.order, self.pos = items, g, [], 0

    def take(self, n: int) -> list[int]:
        out = []
        while len(out) < n:
            if self.pos == len(self.order):
                order = [self.items[i] for i in torch.randperm(len(self.items), generator=self.g).tolist()]
                # A batch straddling two passes must not hold an item twice (across ranks this would
                # be the same sample on two ranks in one step): items already taken go last.
                taken = set(out)
                self.order = [i for i in order if i not in taken] + [i for i in order if i in taken]
                self.pos = 0
            k = min(n - len(out), len(self.order) - self.pos)
            out.extend(self.order[self.pos : self.pos + k])
            self.pos += k
        return out


def collate_clips(items: Sequence[dict]) -> dict:
    """Stack items into ``{"video": (b c t h w), "path": [str], "kind": [str], "start": (b,) int64}``.

    Raises ``VistokError`` when the clips differ in shape (a batch mixing images and clips): use
    ``MixedBatchSampler`` as the DataLoader's ``batch_sampler``.
    """
    if not items:
        raise VistokError("cannot collate an empty batch")
    shapes = {tuple(it["video"].shape) for it in items}
    if len(shapes) > 1:
        raise VistokError(
            f"a batch must hold clips of one shape (all images or all clips); got shapes {sorted(shapes)}. "
            "Pass MixedBatchSampler(dataset, ...) as the DataLoader's batch_sampler"
        )
    return {
        "video": torch.stack([it["video"] for it in items]),
        "path": [it["path"] for it in items],
        "kind": [it["kind"] for it in items],
        "start": torch.tensor([int(it.get("start", 0)) for it in items], dtype=torch.int64),
    }
