"""Media and token files: what kind a media path is, writing frames to an image or video file,
and the ``.npz`` token file of ``vistok encode`` (tokens + JSON metadata) with its one metadata
builder. Every write is atomic (:mod:`vistok.atomic`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vistok.atomic import atomic_output
from vistok.data.images import IMAGE_EXTENSIONS, write_image
from vistok.data.video import VIDEO_EXTENSIONS, write_video
from vistok.errors import VistokError

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
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            indices = z["indices"].astype(np.int64)
            meta = json.loads(bytes(z["meta"]).decode())
    except FileNotFoundError:
        raise VistokError(f"token file {p} does not exist") from None
    except Exception as e:  # zip / key / json errors: all mean "not our file"
        raise VistokError(f"{p} is not a vistok token file: {e}") from None
    if indices.ndim != 3:
        raise VistokError(f"{p}: expected indices of shape (t', h', w'), got {indices.shape}")
    return indices, meta
