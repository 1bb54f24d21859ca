"""Media and token files: what kind a media path is, writing frames to an image or video file,
and the ``.npz`` token file of ``vistok encode`` (tokens + JSON metadata) with its one metadata
builder. Every write is atomic (:mod:`vistok.atomic`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vistok.atomic import atomic_output
from vistok.data.images import IMAGE_EXTENSIONS, write_image
from vistok.data.video import VIDEO_EXTENSIONS, VideoWriter, write_video
from vistok.errors import VistokError
from vistok.limits import MAX_FPS

if TYPE_CHECKING:  # for the annotation only: files sits below tokenizers
    from vistok.tokenizers.base import Tokenizer


def media_kind(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    raise VistokError(
        f"{path}: unrecognised media type {suffix or '(no suffix)'!r}; videos: {sorted(VIDEO_EXTENSIONS)}, "
        f"images: {sorted(IMAGE_EXTENSIONS)}"
    )




def write_media(path: str | Path, frames: np.ndarray, *, fps: float) -> Path:
    """``t h w 3`` uint8 to an image (``t == 1``) or a video file, chosen by the suffix."""
    kind = media_kind(path)
    if kind == "image":
        if frames.shape[0] != 1:
            raise VistokError(f"{path}: an image file holds one frame, got {frames.shape[0]}; use .mp4 or .gif")
        return write_image(path, frames[0])
    return write_video(path, frames, fps=fps if fps > 0 else 25.0)


@contextmanager
def media_writer(path: str | Path, *, fps: float) -> Iterator[Callable[[np.ndarray], None]]:
    """``with media_writer(p, fps=...) as write: write(frames); ...`` -- ``t h w 3`` uint8 frames
    streamed to a video file as they come (memory: one batch), or collected into an image (which
    must get exactly one frame); the file appears atomically when the block ends without an error."""
    if media_kind(path) == "image":
        got: list[np.ndarray] = []
        yield got.append
        if not got:
            raise VistokError(f"{path}: no frame to write")
        write_media(path, np.concatenate(got), fps=fps)
        return
    with VideoWriter(path, fps=fps if fps > 0 else 25.0) as writer:
        yield writer.write


def token_metadata(tok: "Tokenizer", **fields: Any) -> dict[str, Any]:
    """The metadata every token file records: the tokenizer's id, family and vocabulary, then
    ``fields`` (kind, fps, frames, height, width, source, class names, ...)."""
    return {"model_id": tok.model_id(), "model_type": tok.model_type, "vocab_size": tok.vocab_size, **fields}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez_compressed`` atomically (numpy appends ``.npz`` to names without it, so the
    temporary file gets one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def save_tokens(path: str | Path, tokens: np.ndarray, meta: dict) -> Path:
    """Tokens ``(t' h' w')`` and their metadata (model id, fps, frame count, size) in one ``.npz``."""
    p = Path(path)
    if p.suffix != ".npz":
        raise VistokError(f"token file {p} must end in .npz")
    dtype = np.uint32 if int(tokens.max(initial=0)) < 2**32 else np.int64
    arrays = {"indices": tokens.astype(dtype), "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    return save_npz(p, arrays)




def load_tokens(path: str | Path) -> tuple[np.ndarray, dict]:
    """Tokens ``(t' h' w')`` int64 and their metadata from a file :func:`save_tokens` wrote; the
    array must hold non-negative integers (not floats or booleans) in a non-empty grid, the
    metadata must be a JSON object whose ``fps`` (if any) is a number in [0, 1000] (0 for stills)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            raw = z["indices"]
            meta = json.loads(bytes(z["meta"]).decode("utf-8"))
    except FileNotFoundError:
        raise VistokError(f"token file {p} does not exist") from None
    except Exception as e:  # zip / key / json / unicode errors: all mean "not our file"
        raise VistokError(f"{p} is not a vistok token file: {e}") from None
    if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.integer):
        raise VistokError(f"{p}: token indices must be integers, got {raw.dtype}")
    if raw.ndim != 3 or raw.size == 0:
        raise VistokError(f"{p}: expected a non-empty (t', h', w') grid of indices, got shape {raw.shape}")
    if int(raw.min()) < 0:
        raise VistokError(f"{p}: token indices must be >= 0, got {int(raw.min())}")
    if not isinstance(meta, dict):
        raise VistokError(f"{p}: metadata must be a JSON object, got {type(meta).__name__}")
    fps = meta.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 <= fps <= MAX_FPS):
        raise VistokError(f"{p}: metadata fps must be a number in [0, {MAX_FPS}] (0: a still image), got {fps!r}")
    return raw.astype(np.int64), meta
