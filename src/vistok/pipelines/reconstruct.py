"""Tokenize a media file and rebuild it: the work behind ``vistok reconstruct / encode / decode``.

A video is decoded in one pass, tokenized and decoded again chunk by chunk (exact streaming), and
each reconstructed chunk goes straight to its sink (the output file) with its per-frame scores, so
memory is bounded by the chunk, however long the clip; the chunk length comes from a memory budget
(:mod:`vistok.pipelines.budget`). Frames are trimmed to
``1 + 4k`` and the picture centre-cropped to a multiple of the tokenizer's spatial factor (both
reported), after an optional resize of the shorter side.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vistok.data.images import probe_image, read_image
from vistok.data.transforms import center_crop, resize_shorter, to_uint8
from vistok.data.video import iter_video_frames, probe_video
from vistok.errors import VistokError
from vistok.files import media_kind
from vistok.limits import DEFAULT_MAX_FRAME_PIXELS
from vistok.paths import check_input_file
from vistok.pipelines.budget import ChunkChoice, choose_chunk_frames
from vistok.pipelines.tiling import TiledReconstruction
from vistok.metrics.quality import frame_quality, uint8_frames
from vistok.tokenizers.base import Tokenizer


@dataclass
class MediaPlan:
    """How an input file maps onto the tokenizer's grid."""

    path: str
    kind: str  # "video" | "image"
    fps: float
    source_frames: int
    source_size: tuple[int, int]  # (h, w) as stored
    frames: int  # used: 1 + T k
    size: tuple[int, int]  # (h, w) after resize and crop
    resize_shorter_to: int | None
    notes: list[str] = field(default_factory=list)




def plan_media(
    tok: Tokenizer, path: str | Path, *, size: int | None = None, max_frames: int | None = None,
    max_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS,
) -> MediaPlan:
    """Probe ``path`` (no decoding) and decide frames and crop for ``tok``; frames of more than
    ``max_pixels`` pixels on the tokenizer's grid are refused (``None``: no limit)."""
    p = check_input_file(path)
    kind = media_kind(p)
    tc, sc = tok.temporal_compression, tok.spatial_compression
    if kind == "video":
        info = probe_video(p)
        h, w, n, fps = info.height, info.width, info.frames, info.fps or 25.0
    else:
        (h, w), n, fps = probe_image(p), 1, 0.0
    notes = []
    if size is not None:
        if size < sc:
            raise VistokError(f"--size must be at least {sc}")
        scale = size / min(h, w)
        rh, rw = (size, max(size, round(w * scale))) if h <= w else (max(size, round(h * scale)), size)
    else:
        rh, rw = h, w
    ch, cw = rh - rh % sc, rw - rw % sc
    if ch == 0 or cw == 0:
        raise VistokError(f"{p}: {h}x{w} is smaller than the tokenizer's {sc}x{sc} patch; pass --size")
    if (ch, cw) != (rh, rw):
        notes.append(f"centre-cropped {rh}x{rw} to {ch}x{cw} (a multiple of {sc})")
    if max_pixels is not None and ch * cw > max_pixels:
        raise VistokError(
            f"{p}: {cw}x{ch} frames ({ch * cw} pixels) exceed the budget of {max_pixels} pixels per frame; "
            f"pass --size (e.g. --size {min(1080, min(ch, cw))}) to shrink them, or --max-pixels to raise the budget"
        )
    limit = n if max_frames is None else min(n, max_frames)
    if limit < 1:
        raise VistokError(f"{p}: no frames to use")
    used = 1 + (limit - 1) // tc * tc
    if used != n:
        notes.append(f"used {used} of {n} frames (1 + {tc}k)")
    return MediaPlan(str(p), kind, float(fps), n, (h, w), used, (ch, cw), size, notes)


def _to_model(frames: np.ndarray, plan: MediaPlan) -> torch.Tensor:
    """``t h w 3`` uint8 -> ``(1 c t h w)`` float in [-1, 1] on the plan's grid."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (c t h w) uint8
    if plan.resize_shorter_to is not None:
        x = resize_shorter(x, plan.resize_shorter_to)
    x = center_crop(x, *plan.size)
    return x.float().div(127.5).sub(1.0).unsqueeze(0)


def iter_input_chunks(plan: MediaPlan, chunk_frames: int, tc: int) -> Iterator[torch.Tensor]:
    """The plan's frames as streaming chunks: the first frame alone (the causal tokenizers code it
    alone anyway; on its own it keeps the largest chunk at ``chunk_frames``), then ``chunk_frames``
    each, the last one shorter. The video is decoded in one pass. A file that ends before the
    frame count its header promised ends the stream at the last whole latent frame, with a note
    in ``plan.notes``."""
    if plan.kind == "image":
        yield _to_model(read_image(plan.path)[None], plan)
        return
    frames = iter_video_frames(plan.path, num_frames=plan.frames, strict=False)
    sizes = [1] + [chunk_frames] * ((plan.frames - 1) // chunk_frames) + [(plan.frames - 1) % chunk_frames]
    used = 0
    for size in filter(None, sizes):
        chunk = list(itertools.islice(frames, size))  # the reader refuses a file with no frame at all
        if len(chunk) < size:  # the file is shorter than its header says: keep whole latent frames
            keep = len(chunk) // tc * tc
            plan.notes.append(f"the video ended after {used + len(chunk)} of the {plan.frames} frames its header "
                              f"gives; used {used + keep}")
            if keep:
                yield _to_model(np.stack(chunk[:keep]), plan)
            return
        used += size
        yield _to_model(np.stack(chunk), plan)


@dataclass
class Reconstruction:
    plan: MediaPlan
    original: np.ndarray | None  # (t h w 3) uint8, on the tokenizer's grid; None unless kept
    reconstructed: np.ndarray | None  # (t h w 3) uint8; None unless kept
    tokens: np.ndarray | None  # (t' h' w') int64; None for a continuous (KL) bottleneck or tiles
    metrics: dict
    chunk: ChunkChoice | None = None  # how the chunk length was chosen (None: given)

    def summary(self) -> str:
        m = self.metrics
        line = f"PSNR {m['psnr']:.2f} dB"
        if m.get("ssim") is not None:
            line += f"  SSIM {m['ssim']:.4f}"
        if m.get("ms_ssim") is not None:
            line += f"  MS-SSIM {m['ms_ssim']:.4f}"
        tiles = f", {m['tiles']} tiles of {m['tile'][1]}x{m['tile'][0]}" if m.get("tile") else ""
        if m["bits_per_pixel_raw"] is None:
            grid = f" on a {'x'.join(str(n) for n in m['token_grid'])} grid" if m.get("token_grid") else ""
            return line + f"  (continuous latent{grid}, no tokens{tiles})"
        return line + f"  ({m['tokens']} tokens, {m['bits_per_pixel_raw']:.4f} bpp before entropy coding{tiles})"


def plan_chunks(tok: Tokenizer, plan: MediaPlan, chunk_frames: int | None = None, max_memory: int | None = None, *,
                decode: bool = True, tile: int | None = None) -> tuple[int, ChunkChoice | None]:
    """``chunk_frames`` when given (checked), else the longest chunk whose measured working set fits
    ``max_memory`` bytes (default: what the process holds plus half the available memory; see
    :mod:`vistok.pipelines.budget`) with the choice; ``decode=False`` plans encoding alone. With
    ``tile`` the working set is one tile's (the tiles go through one after another) plus the whole
    frames of the chunk: its input, the blended output and its uint8 copies."""
    tc = tok.temporal_compression
    if chunk_frames is not None:
        if chunk_frames < tc or chunk_frames % tc:
            raise VistokError(f"--chunk-frames must be a positive multiple of {tc}")
        return chunk_frames, None
    h, w = plan.size
    if tile is None:
        choice = choose_chunk_frames(tok, h, w, max_memory, frames=plan.frames, decode=decode, metrics=decode)
        return choice.chunk_frames, choice
    frame_bytes = h * w * 3 * (4 + 4 + 4 + 1 + 1)  # input, blended output, the tile weights' product, two uint8 copies
    choice = choose_chunk_frames(tok, min(tile, h), min(tile, w), max_memory, frames=plan.frames, decode=decode,
                                 metrics=False, per_frame=frame_bytes)
    return choice.chunk_frames, choice


@torch.no_grad()
def reconstruct_file(
    tok: Tokenizer,
    path: str | Path,
    *,
    size: int | None = None,
    max_frames: int | None = None,
    chunk_frames: int | None = None,
    max_memory: int | None = None,
    progress=None,
    max_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS,
    sink: Callable[[np.ndarray], None] | None = None,
    keep_frames: bool = True,
) -> Reconstruction:
    """Plan ``path`` (:func:`plan_media`), its chunk length (:func:`plan_chunks`), and
    :func:`reconstruct_media` it."""
    plan = plan_media(tok, path, size=size, max_frames=max_frames, max_pixels=max_pixels)
    chunk_frames, choice = plan_chunks(tok, plan, chunk_frames, max_memory)
    return reconstruct_media(tok, plan, chunk_frames, progress=progress, sink=sink, keep_frames=keep_frames,
                             choice=choice)


@torch.no_grad()
def reconstruct_media(
    tok: Tokenizer,
    plan: MediaPlan,
    chunk_frames: int,
    *,
    progress=None,
    sink: Callable[[np.ndarray], None] | None = None,
    keep_frames: bool = True,
    choice: ChunkChoice | None = None,
    tile: int | None = None,
    tile_overlap: int = 0,
) -> Reconstruction:
    """Tokenize the planned media and decode it again, streaming: each decoded chunk goes to
    ``sink`` (``t h w 3`` uint8, e.g. a video writer) and is then dropped unless ``keep_frames``;
    metrics are computed frame by frame on uint8-rounded frames. ``tile``: frames go through in
    overlapping square tiles of that many pixels (:mod:`vistok.pipelines.tiling`; not exact, and
    ``tokens`` is then None: each tile has its own grid)."""
    tc = tok.temporal_compression
    originals, recons, tokens = [], [], []
    per_frame: dict[str, list[float]] = {}
    dtype = next(tok.parameters()).dtype
    pending: list[torch.Tensor] = []  # pixel chunks kept only until their reconstruction is out

    def source():
        for chunk in iter_input_chunks(plan, chunk_frames, tc):
            pending.append(chunk)
            yield chunk.to(dtype)

    continuous = tok.vocab_size is None  # a KL tokenizer: no tokens, its codes go to the decoder
    tiles = TiledReconstruction(tok, *plan.size, tile, tile_overlap)
    token_count = 0
    done = 0
    for x_hat, pieces in tiles.run(source()):
        if len(tiles) == 1:
            tokens.append(pieces[0].cpu().numpy())  # (t' h' w') grid
        token_count += sum(p.numel() for p in pieces)
        orig_u8 = to_uint8(pending.pop(0)[0])
        rec_u8 = to_uint8(x_hat[0].float())
        del x_hat
        for i in range(len(rec_u8)):  # one frame at a time: the scores' buffers stay one frame
            scores = frame_quality(uint8_frames(orig_u8[i : i + 1]).double(), uint8_frames(rec_u8[i : i + 1]).double())
            for k, v in scores.items():
                per_frame.setdefault(k, []).extend(v.tolist())
        if sink is not None:
            sink(rec_u8)
        if keep_frames:
            originals.append(orig_u8)
            recons.append(rec_u8)
        done += len(rec_u8)
        if progress is not None:
            progress(done, plan.frames)
    toks = np.concatenate(tokens) if tokens else None  # one grid; tiles have one each
    h, w = plan.size
    vocab = tok.vocab_size or 0
    metrics = {k: float(np.mean(v)) for k, v in per_frame.items()}
    metrics.setdefault("ssim", None)  # frames under 11 pixels
    metrics.setdefault("ms_ssim", None)
    metrics.update(
        psnr_per_frame=[round(v, 3) for v in per_frame["psnr"]],
        frames=done,
        height=h,
        width=w,
        tokens=0 if continuous else token_count,
        token_grid=list(toks.shape) if toks is not None else None,
        bits_per_pixel_raw=None if continuous else token_count * math.log2(max(vocab, 2)) / (done * h * w),
        chunk_frames=chunk_frames,
        tiles=len(tiles),
        tile=list(tiles.tile_size) if len(tiles) > 1 else None,
        notes=plan.notes,
    )
    return Reconstruction(plan, np.concatenate(originals) if keep_frames else None,
                          np.concatenate(recons) if keep_frames else None, None if continuous else toks, metrics, choice)
