"""An in-memory copy of a ``ClipDataset``: every file decoded once, resized, kept as uint8.

Training a tiny tokenizer on a CPU spends as long decoding and resizing a 720p clip as on the
model's step; caching the (small) resized frames removes that cost. Items and random draws follow
the same rules as ``ClipDataset`` (clip start and crop from a generator seeded by
``(seed, epoch, index)``), so a run is reproducible and resumable either way. Frames are cached at
the size the dataset crops from (shorter side = crop size, or the dataset's ``scale``), so without
``scale`` random crops move along the longer side only.
"""

from __future__ import annotations

import logging

import torch

from vistok.data.datasets import ClipDataset, EntryDataset
from vistok.data.images import read_image
from vistok.data.transforms import _uint8_cthw, center_crop, cover, finish_clip, random_crop
from vistok.data.video import read_video
from vistok.errors import VistokError

logger = logging.getLogger(__name__)


class InMemoryClipDataset(EntryDataset):
    """Wraps a ``ClipDataset``; refuses (``VistokError``) if the cache would exceed ``max_bytes``."""

    def __init__(self, source: ClipDataset, *, max_bytes: int = 2 * 1024**3):
        self.source = source
        self.frames, self.stride, self.size = source.frames, source.stride, source.size
        self.random_crop, self.seed, self.epoch = source.random_crop, source.seed, 0
        self.image_frames = source.image_frames
        self.scale, self.grayscale = source.scale, source.grayscale
        height, width = self.size
        self.pixels: list[torch.Tensor] = []
        self.entries = []
        total = 0
        for entry in source.entries:
            try:
                raw = read_video(entry.path) if entry.kind == "video" else read_image(entry.path)[None]
            except VistokError as e:
                source.skipped.append((entry.path, str(e)))
                logger.warning("skipping %s: %s", entry.path, e)
                continue
            video = cover(_uint8_cthw(raw), height, width, self.scale).contiguous()  # (c t h w) uint8
            if entry.kind == "video" and video.shape[1] < source.span:
                source.skipped.append((entry.path, f"decoded only {video.shape[1]} frames"))
                continue
            total += video.numel()
            if total > max_bytes:
                raise VistokError(f"the decoded data exceeds the in-memory cache budget ({max_bytes / 2**30:.1f} GiB); set data.cache=false")
            self.pixels.append(video)
            self.entries.append(entry)
        if not self.entries:
            raise VistokError("no file could be decoded for the in-memory cache")

    def __getitem__(self, index: int) -> dict:
        entry, pixels = self.entries[index], self.pixels[index]
        g = self._generator(index)
        start = 0
        if entry.kind == "video":
            span = (self.frames - 1) * self.stride + 1
            if self.random_crop:
                start = int(torch.randint(0, pixels.shape[1] - span + 1, (1,), generator=g))
            clip = pixels[:, start : start + span : self.stride]
        else:
            clip = pixels
        h, w = self.size
        clip = random_crop(clip, h, w, generator=g) if self.random_crop else center_crop(clip, h, w)
        video = finish_clip(clip, self.grayscale if self.random_crop else 0.0, g)
        if entry.kind == "image" and self.image_frames > 1:
            video = video.expand(-1, self.image_frames, -1, -1).contiguous()
        return {"video": video, "path": entry.path, "kind": entry.kind, "start": start}
