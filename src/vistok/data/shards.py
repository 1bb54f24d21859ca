"""WebDataset-style tar shards, written and streamed without the ``webdataset`` package.

Format (readable by ``webdataset`` too): plain POSIX tar files ``{prefix}-000000.tar``, ...; each
sample is a run of adjacent members sharing a key, named ``{key}.{ext}``: the file's original
encoded bytes (``000123.mp4``, ``000124.png``, ...; never re-encoded, so no generation loss and
shards are as small as the sources) and ``{key}.json`` with metadata (original path, kind, frame
count, fps, size). Data beyond one disk streams through ``ShardDataset`` with sequential reads only.

Splitting work (``ShardDataset``): readers are the ``world_size * num_workers`` DataLoader workers
of all ranks. With at least that many shards, each reader gets a disjoint set of whole shards;
in particular **each rank reads a disjoint set of shards**. With fewer shards than readers a warning
is issued and the split falls back to samples: if there are at least as many shards as ranks, ranks
still get disjoint shards and a rank's workers each read all of its shards, keeping every
``num_workers``-th sample; with fewer shards than ranks, every reader reads every shard and keeps
every ``world_size * num_workers``-th sample. Either way every sample is read by exactly one reader.
Shards hold different numbers of samples, so readers can end an epoch a few samples apart; under DDP,
bound the epoch by steps (or make shard sizes equal) so no rank waits at a collective for another.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from vistok.atomic import write_failure
from vistok.data.datasets import _mix, check_augment, check_clip_length, check_size, make_clip, media_files, rank_and_world
from vistok.data.images import IMAGE_EXTENSIONS, probe_image
from vistok.data.video import VIDEO_EXTENSIONS, probe_video
from vistok.errors import VistokError

_TAR_BLOCK = 512


def _member_bytes(n: int) -> int:
    """Bytes a member takes in a tar: one header block plus the data padded to whole blocks."""
    return _TAR_BLOCK + -(-n // _TAR_BLOCK) * _TAR_BLOCK


def _kind(ext: str) -> str | None:
    ext = "." + ext.lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image" if ext in IMAGE_EXTENSIONS else None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0  # fixed metadata: the same files give byte-identical shards
    tar.addfile(info, io.BytesIO(data))


def write_shards(
    files,
    out_dir: str | os.PathLike,
    *,
    max_size_bytes: int = 512 * 1024**2,
    max_count: int = 10_000,
    prefix: str = "shard",
    check: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Pack video/image files (a list, or a folder scanned recursively) into tar shards.

    A new shard starts when the next sample would push the current one past ``max_size_bytes``
    (tar headers and padding included; a single larger sample gets a shard of its own) or when it
    holds ``max_count`` samples. Keys are running numbers ``000000000``, ... across all shards, so
    they are unique and carry no dots (WebDataset splits the key from the extension at the first dot
    of the name). With ``check``, each file is probed first (header only) and unusable files are
    skipped with one warning naming them; the probe also fills the metadata. Refuses to write into
    a folder that already holds ``{prefix}-*.tar`` unless ``overwrite`` (stale shards would be read
    along with new ones). Returns the shard paths.
    """
    if max_size_bytes < 1 or max_count < 1:
        raise VistokError(f"max_size_bytes and max_count must be >= 1; got {max_size_bytes}, {max_count}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = sorted(out_dir.glob(f"{prefix}-*.tar"))
    if stale:
        if not overwrite:
            raise VistokError(
                f"{out_dir} already holds {len(stale)} shard(s) named {prefix}-*.tar; pass overwrite=True"
            )
        for p in stale:
            p.unlink()
    shards: list[Path] = []
    skipped: list[tuple[str, str]] = []
    tar: tarfile.TarFile | None = None
    tmp: Path | None = None
    size = count = key = 0

    def close() -> None:
        nonlocal tar
        if tar is not None:
            done, tar = tar, None
            final = tmp.with_suffix("")  # drop ".part": the shard appears only when complete
            try:
                done.close()
            except OSError as e:
                tmp.unlink(missing_ok=True)
                failure = write_failure(final, e)
                raise (failure or e) from e
            os.replace(tmp, final)
            shards.append(final)

    try:
        for path in media_files(files):
            ext = path.suffix.lower().lstrip(".")
            kind = _kind(ext)
            if kind is None:
                skipped.append((str(path), f"not a video or image file (suffix {path.suffix!r})"))
                continue
            meta = {"path": str(path), "kind": kind}
            try:
                if check and kind == "video":
                    info = probe_video(path)
                    meta.update(frames=info.frames, fps=info.fps, width=info.width, height=info.height)
                elif check:
                    h, w = probe_image(path)
                    meta.update(frames=1, width=w, height=h)
                data = path.read_bytes()
            except (VistokError, OSError) as e:
                skipped.append((str(path), str(e)))
                continue
            name = f"{key:09d}"
            meta_bytes = json.dumps(meta, sort_keys=True).encode()
            sample_size = _member_bytes(len(data)) + _member_bytes(len(meta_bytes))
            if tar is not None and (count >= max_count or size + sample_size > max_size_bytes):
                close()
            if tar is None:
                tmp = out_dir / f"{prefix}-{len(shards):06d}.tar.part"
                tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
                size = count = 0
            _add(tar, f"{name}.{ext}", data)
            _add(tar, f"{name}.json", meta_bytes)
            size += sample_size
            count += 1
            key += 1
        close()
    except OSError as e:  # a full disk mid-shard: one error naming the shard
        failure = write_failure(tmp.with_suffix("") if tmp is not None else out_dir, e)
        if failure is None:
            raise
        raise failure from e
    finally:
        if tar is not None:  # an exception mid-shard: drop the partial file
            try:
                tar.close()
            except OSError:
                pass
            tmp.unlink(missing_ok=True)
    if skipped:
        lines = "\n".join(f"  {p}: {r}" for p, r in skipped[:20])
        more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        warnings.warn(f"write_shards skipped {len(skipped)} file(s):\n{lines}{more}", stacklevel=2)
    if not shards:
        raise VistokError(f"write_shards found no usable video or image in {files!r}")
    return shards


def shard_paths(shards) -> list[str]:
    """A folder (its ``*.tar``, sorted), one tar, or a list of tars -> list of paths."""
    if isinstance(shards, (str, os.PathLike)):
        p = Path(shards)
        if p.is_dir():
            found = sorted(str(f) for f in p.glob("*.tar"))
            if not found:
                raise VistokError(f"no .tar shards in {p}")
            return found
        shards = [p]
    out = [str(s) for s in shards]
    missing = [s for s in out if not Path(s).is_file()]
    if missing or not out:
        raise VistokError(f"shard files not found: {missing[:5] or '(empty list)'}")
    return out


def assign_shards(
    num_shards: int, rank: int, world_size: int, worker: int, num_workers: int
) -> tuple[list[int], int, int]:
    """Which shards one reader streams, and which of their samples it keeps.

    Returns ``(shards, modulus, remainder)``: the reader keeps sample ``j`` of shard ``s`` when
    ``(s + j) % modulus == remainder`` (adding ``s`` rotates which reader gets each shard's first
    samples). See the module docstring for the three regimes.
    """
    readers, reader = world_size * num_workers, rank * num_workers + worker
    if num_shards >= readers:
        return list(range(reader, num_shards, readers)), 1, 0
    warnings.warn(
        f"{num_shards} shard(s) for {world_size} rank(s) x {num_workers} worker(s): falling back to "
        "splitting samples, so some readers read the same shards; write more shards than readers",
        stacklevel=3,
    )
    if num_shards >= world_size:
        return list(range(rank, num_shards, world_size)), num_workers, worker
    return list(range(num_shards)), readers, reader


class ShardDataset(IterableDataset):
    """Stream clips from tar shards written by ``write_shards`` (or any WebDataset of mp4/png/jpg).

    Yields the same dicts as ``ClipDataset`` plus ``"key"``: ``{"video": (c t h w) in [-1, 1],
    "path": original path (from the JSON) or "shard:key", "kind", "start", "key"}``.

    Per epoch (``set_epoch``) the shard order is shuffled with ``seed`` (the same order on every rank,
    which the disjoint split relies on), then split across ranks and DataLoader workers (module
    docstring). Within a reader, samples pass through a shuffle buffer of ``shuffle_buffer`` encoded
    samples (0 or 1: stream order). Samples are decoded from memory; a damaged member, a video too short
    for a clip, or a sample with no media member is skipped with a warning naming shard and key.
    ``rank``/``world_size`` override torch.distributed (for tests and custom launchers).
    """

    def __init__(
        self,
        shards,
        *,
        frames: int = 17,
        size: int | tuple[int, int] = 64,
        stride: int = 1,
        random_crop: bool = True,
        image_frames: int = 1,
        kinds=("video", "image"),
        shuffle_buffer: int = 100,
        shuffle_shards: bool = True,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        scale: int | None = None,
        grayscale: float = 0.0,
    ):
        super().__init__()
        check_clip_length(frames, "frames")
        check_clip_length(image_frames, "image_frames")
        if not isinstance(stride, int) or stride < 1:
            raise VistokError(f"stride must be an integer >= 1; got {stride!r}")
        if shuffle_buffer < 0:
            raise VistokError(f"shuffle_buffer must be >= 0; got {shuffle_buffer}")
        self.shards = shard_paths(shards)
        self.frames, self.size, self.stride = frames, check_size(size), stride
        self.random_crop, self.image_frames = random_crop, image_frames
        self.scale, self.grayscale = check_augment(scale, grayscale, self.size)
        self.kinds = tuple(kinds)
        if not self.kinds or any(k not in ("video", "image") for k in self.kinds):
            raise VistokError(f"kinds must be a non-empty subset of ('video', 'image'); got {kinds!r}")
        self.shuffle_buffer, self.shuffle_shards = shuffle_buffer, shuffle_shards
        self.seed, self.epoch = int(seed), 0
        self.rank, self.world_size = rank, world_size
        rank_and_world(rank, world_size)  # validate the overrides now, not inside a worker

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[dict]:
        rank, world = rank_and_world(self.rank, self.world_size)
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        order = list(range(len(self.shards)))
        if self.shuffle_shards:
            g_order = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
            order = [order[i] for i in torch.randperm(len(order), generator=g_order).tolist()]
        mine, modulus, remainder = assign_shards(len(order), rank, world, worker, num_workers)
        # Per-reader randomness (shuffle buffer, clip starts, crops): distinct per rank, worker and epoch.
        g = torch.Generator().manual_seed(_mix(self.seed, self.epoch, rank, worker, 1))
        samples = (s for k in mine for s in self._read_shard(order[k], modulus, remainder))
        for sample in _shuffled(samples, self.shuffle_buffer, g):
            item = self._decode(sample, g)
            if item is not None:
                yield item

    def _read_shard(self, shard_index: int, modulus: int, remainder: int) -> Iterator[tuple[str, str, dict]]:
        """``(shard, key, {ext: bytes})`` for the kept samples of one shard, read sequentially."""
        shard = self.shards[shard_index]
        current, files, position = None, {}, -1
        keep = False
        try:
            # "r|*": a pure stream (no seeking), as from a pipe or object store, compressed or not.
            with tarfile.open(shard, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, base = os.path.split(member.name)
                    stem, _, ext = base.partition(".")  # WebDataset: key up to the first dot
                    key = f"{folder}/{stem}" if folder else stem
                    if key != current:
                        if keep and files:
                            yield shard, current, files
                        current, files, position = key, {}, position + 1
                        keep = (shard_index + position) % modulus == remainder
                    if keep:  # unread members are skipped over by the stream without copying
                        files[ext.lower()] = tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as e:
            warnings.warn(
                f"ShardDataset: shard {shard} is damaged after {position + 1} sample(s), skipping the rest: {e}"
            )
            return
        if keep and files:
            yield shard, current, files

    def _decode(self, sample: tuple[str, str, dict], g: torch.Generator) -> dict | None:
        shard, key, files = sample
        media = [(ext, _kind(ext)) for ext in files if _kind(ext) is not None]
        if not media:
            warnings.warn(f"ShardDataset skipping {shard}:{key}: no video or image member (has {sorted(files)})")
            return None
        ext, kind = media[0]
        if kind not in self.kinds:
            return None
        try:
            meta = json.loads(files["json"]) if "json" in files else {}
            total = int(meta.get("frames") or 0) if kind == "video" else 1
            if kind == "video" and total <= 0:  # no metadata: read the container header from memory
                total = probe_video(files[ext]).frames
            video, start = make_clip(
                files[ext],
                kind,
                total_frames=total,
                frames=self.frames,
                stride=self.stride,
                size=self.size,
                image_frames=self.image_frames,
                random=self.random_crop,
                generator=g,
                scale=self.scale,
                grayscale=self.grayscale,
            )
        except (VistokError, ValueError, TypeError) as e:
            warnings.warn(f"ShardDataset skipping {shard}:{key}.{ext}: {e}")
            return None
        return {"video": video, "path": meta.get("path", f"{shard}:{key}"), "kind": kind, "start": start, "key": key}


def _shuffled(items, buffer_size: int, g: torch.Generator):
    """Reservoir-style shuffle: hold ``buffer_size`` items, emit a random one as each new one arrives."""
    if buffer_size <= 1:
        yield from items
        return
    buffer = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= buffer_size:
            j = int(torch.randint(0, len(buffer), (1,), generator=g))
            buffer[j], buffer[-1] = buffer[-1], buffer[j]
            yield buffer.pop()
    while buffer:
        j = int(torch.randint(0, len(buffer), (1,), generator=g))
        buffer[j], buffer[-1] = buffer[-1], buffer[j]
        yield buffer.pop()
