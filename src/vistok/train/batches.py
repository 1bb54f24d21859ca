"""The trainer's batches: a deterministic function of (seed, step, rank).

Map-style data (folders, files, the shipped samples) goes through ``ClipDataset`` (optionally
cached in memory) and ``MixedBatchSampler``: epoch ``e`` has a fixed order and fixed random crops
given the seed, so resuming at step ``s`` means regenerating epoch ``s // len(sampler)`` and
skipping ``s % len(sampler)`` batches -- no data-loader state needs saving. Tar shards stream
through ``ShardDataset``; a resumed shard run continues with fresh draws (documented in
docs/training.md), as every streaming loader does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vistok.data.datasets import ClipDataset, MixedBatchSampler, collate_clips
from vistok.data.idx import IdxImageDataset, is_idx_folder
from vistok.data.memory import InMemoryClipDataset
from vistok.data.samples import training_files
from vistok.data.shards import ShardDataset, shard_paths
from vistok.errors import VistokError
from vistok.train.config import TrainConfig, stage_plan
from vistok.train.distributed import DistInfo

logger = logging.getLogger(__name__)


def _is_shards(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".tar"
    return path.is_dir() and any(path.glob("*.tar")) and not any(p.suffix != ".tar" and p.is_file() for p in path.iterdir())


def build_dataset(cfg: TrainConfig):
    d = cfg.data
    if d.path is not None and is_idx_folder(d.path):  # MNIST-style labelled images (Fashion-MNIST)
        return IdxImageDataset(d.path, split="train", size=d.size, seed=cfg.seed)
    source = training_files() if d.path is None else d.path
    ds = ClipDataset(source, frames=d.frames, size=d.size, stride=d.frame_stride, random_crop=d.random_crop, seed=cfg.seed,
                     scale=d.scale, grayscale=d.grayscale)
    return InMemoryClipDataset(ds) if d.cache else ds


def video_fraction(cfg: TrainConfig, kinds: list[str]) -> float:
    has_video, has_image = "video" in kinds, "image" in kinds
    if not has_video:
        return 0.0
    if not has_image:
        return 1.0
    return 1.0 - cfg.data.image_fraction


def build_batches(cfg: TrainConfig, info: DistInfo, *, start_step: int = 0) -> Iterator[torch.Tensor]:
    """Endless ``(b c t h w)`` batches for this rank, starting at global step ``start_step``.

    With progressive ``stages``, the batches of stage ``k`` come from its own data settings and are
    the batches a single-stage run with those settings would draw at steps ``0, 1, ...`` of the
    stage; the iterator ends after the last stage. Resuming at any step -- also exactly at a stage
    boundary -- reproduces them.
    """
    if cfg.stages:
        return _staged_batches(cfg, info, start_step)
    d = cfg.data
    if d.path is not None and _is_shards(Path(d.path)):
        return _shard_batches(cfg, info)
    ds = build_dataset(cfg)
    sampler = MixedBatchSampler(
        ds.kinds,
        batch_size=d.batch_size * cfg.optim.accumulate,
        image_batch_size=d.image_batch_size * cfg.optim.accumulate,
        video_fraction=video_fraction(cfg, ds.kinds),
        seed=cfg.seed,
        rank=info.rank,
        world_size=info.world_size,
    )
    return _map_batches(ds, sampler, cfg, start_step)


def _map_batches(ds, sampler: MixedBatchSampler, cfg: TrainConfig, start_step: int) -> Iterator[torch.Tensor]:
    per_epoch = len(sampler)
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        batches = list(sampler)[skip:]
        loader = DataLoader(ds, batch_sampler=batches, num_workers=cfg.data.num_workers, collate_fn=collate_clips)
        for batch in loader:
            yield batch["video"]
        epoch, skip = epoch + 1, 0


def _shard_batches(cfg: TrainConfig, info: DistInfo) -> Iterator[torch.Tensor]:
    d = cfg.data
    # A streamed batch must be homogeneous in t: shards feed clips only (images only when
    # image_fraction is 1); joint image+video training needs map-style data.
    kinds = ("image",) if d.image_fraction >= 1.0 else ("video",)
    if 0.0 < d.image_fraction < 1.0:
        logger.warning("shards: image_fraction=%s is not applied; streaming clips only", d.image_fraction)
    ds = ShardDataset(
        shard_paths(d.path), frames=d.frames, size=d.size, stride=d.frame_stride, seed=cfg.seed,
        kinds=kinds, rank=info.rank, world_size=info.world_size, scale=d.scale, grayscale=d.grayscale,
    )
    epoch = 0
    while True:
        ds.set_epoch(epoch)
        loader = DataLoader(ds, batch_size=d.batch_size * cfg.optim.accumulate, num_workers=d.num_workers, collate_fn=collate_clips)
        n = 0
        for batch in loader:
            n += 1
            yield batch["video"]
        if n == 0:
            raise VistokError(f"the shards under {d.path} gave no batch of {d.batch_size} clips")
        epoch += 1


def _staged_batches(cfg: TrainConfig, info: DistInfo, start_step: int) -> Iterator[torch.Tensor]:
    for start, end, stage_cfg in stage_plan(cfg):
        if start_step >= end:
            continue
        first = max(start_step, start)
        batches = build_batches(stage_cfg, info, start_step=first - start)  # built when reached
        for _ in range(end - first):
            yield next(batches)
