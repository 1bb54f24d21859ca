"""Read images to ``h w 3`` uint8 RGB and write them as PNG (pillow).

Every source mode is brought to 8-bit RGB, so the tokenizer sees one format:

* grey (``L``), bilevel (``1``), palette (``P``), CMYK, YCbCr, ... -> converted by pillow;
* 16-bit grey (``I;16``, ``I``): scaled to 8 bits by ``round(v / 257)`` (65535 -> 255), not clipped,
  so the full 16-bit range maps onto the full 8-bit range; 32-bit float (``F``) is taken as [0, 1];
* alpha (``RGBA``, ``LA``, ``PA``, palette transparency): composited on white by default, the way
  viewers and browsers show a transparent picture; ``alpha="drop"`` keeps the colour channels
  as stored (transparent pixels then show whatever colour they happen to hold, often black);
* EXIF orientation is applied, so phone photos come out upright;
* a multi-frame file (TIFF pages, APNG) gives its first frame.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vistok.atomic import atomic_output
from vistok.errors import VistokError

#: Suffixes treated as still images when scanning folders (GIF is a video: see ``VIDEO_EXTENSIONS``).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".tga"}
)

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# pillow raises these for damaged or foreign files; each becomes a VistokError naming the file.
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError, EOFError)


def _name(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else getattr(source, "name", "<file>")


# Images declaring more pixels than this are refused from the header, before any decoding: a
# 200-byte PNG can declare 100 000 x 100 000 pixels (a "decompression bomb").
MAX_DECODE_PIXELS = 1 << 28

# EXIF orientations that rotate by 90 degrees (width and height swap once applied).
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)


def _open(source: ImageSource) -> Image.Image:
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        img = Image.open(source)
    except _PIL_ERRORS as e:
        raise VistokError(f"cannot open {_name(source)} as an image: {e}") from e
    except Image.DecompressionBombError as e:
        raise VistokError(f"{_name(source)}: refusing to decode: {e}") from None
    w, h = img.size
    if w * h > MAX_DECODE_PIXELS:
        img.close()
        raise VistokError(f"{_name(source)} declares {w}x{h} pixels, more than the {MAX_DECODE_PIXELS} vistok decodes")
    return img


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a damaged EXIF block: pillow's exif_transpose ignores it too
        return 1


def probe_image(source: ImageSource) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels, as :func:`read_image`
    returns them (EXIF orientation applied, so a portrait photo stored landscape reads as portrait)."""
    with _open(source) as img:
        w, h = img.size
        if _orientation(img) in _TRANSPOSED_ORIENTATIONS:
            w, h = h, w
    if w < 1 or h < 1:
        raise VistokError(f"{_name(source)}: image has no pixels ({w}x{h})")
    return h, w


def _high_bit_to_uint8(img: Image.Image) -> np.ndarray:
    """Grey images stored with more than 8 bits -> ``h w`` uint8."""
    if img.mode == "F":
        return (np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    # I;16 (little/big endian) and I (32-bit int, what some PNG/TIFF readers produce for 16-bit data).
    a = np.asarray(img).astype(np.int64)
    return ((np.clip(a, 0, 65535) + 128) // 257).astype(np.uint8)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info


def read_image(source: ImageSource, *, alpha: str = "white") -> np.ndarray:
    """Decode an image file (PNG, JPEG, WebP, TIFF, BMP, ...) to ``h w 3`` uint8 RGB.

    ``alpha``: ``"white"`` composites transparent pixels on white; ``"drop"`` discards the alpha
    channel. Raises ``VistokError`` for files pillow cannot read (not an image, truncated, damaged).
    """
    if alpha not in ("white", "drop"):
        raise VistokError(f"alpha must be 'white' or 'drop'; got {alpha!r}")
    name = _name(source)
    with _open(source) as img:
        try:
            img.seek(0)
            img = ImageOps.exif_transpose(img)  # also forces a full decode, so truncation fails here
            img.load()
            if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
                grey = _high_bit_to_uint8(img)
                return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))
            if _has_alpha(img):
                rgba = np.asarray(img.convert("RGBA"))
                if alpha == "drop":
                    return np.array(rgba[..., :3])
                a = rgba[..., 3:].astype(np.uint16)
                # Integer "over" on white, rounded: (rgb * a + 255 * (255 - a)) / 255.
                out = (rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255
                return out.astype(np.uint8)
            return np.array(img.convert("RGB"))  # np.array copies: writable, unlike asarray's view
        except _PIL_ERRORS as e:
            raise VistokError(f"{name}: cannot decode image: {e}") from e


def write_image(path: str | os.PathLike, image) -> Path:
    """Write ``h w 3`` (or ``h w`` / ``h w 1`` grey) uint8 pixels as a PNG; returns the path.

    PNG because it is lossless: a saved reconstruction shows the tokenizer's errors, not a second
    codec's. The suffix must be ``.png``.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise VistokError(f"write_image writes PNG; expected a .png path, got {path.name}")
    if hasattr(image, "detach"):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise VistokError(
            f"expected uint8 pixels laid out (h w 3); got dtype {image.dtype}. "
            "Convert a [-1, 1] float image with vistok.data.transforms.to_uint8 first"
        )
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise VistokError(f"expected pixels laid out (h w 3) or (h w); got shape {tuple(image.shape)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG")
    return path
