"""The ``.vtok`` container: a fixed header, then one framed record per temporal chunk.

The byte layout is spelled out in ``docs/codec.md``; this module is its only implementation.
All integers are little-endian. In short::

    header (53 bytes)   magic "VTOK", version, entropy coder, K, T, S, flags, kept-bit mask,
                        model id (first 16 bytes of the tokenizer's SHA-256 model_id), frames,
                        height, width, fps (num/den), latent frames per chunk, CRC32
    chunk i (14 + n)    index, latent frames, payload length, side info, payload, CRC32

Chunks are coded independently (the entropy models restart at every chunk), so a reader can skip
to chunk ``i`` by reading only the 10-byte chunk heads before it, and a writer never seeks back:
files stream out and in with memory bounded by one chunk.

Every size is checked against fixed limits before anything is allocated, and both the header and
each chunk carry a CRC32, so a truncated or damaged file raises :class:`VistokFormatError` instead
of decoding into garbage.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO

from vistok.errors import VistokError
from vistok.limits import MAX_BITS, MAX_FPS

MAGIC = b"VTOK"
VERSION = 1

# Entropy coders, by the id stored in the header (ids are never reused: a file stays readable).
CODER_STATIC = 0
CODER_CONTEXT = 1
CODER_NAMES = {CODER_STATIC: "static", CODER_CONTEXT: "context"}
CODER_IDS = {v: k for k, v in CODER_NAMES.items()}

#: Bytes of the tokenizer's SHA-256 ``model_id`` kept in the header. 128 bits make an accidental
#: match impossible in practice (2^-128) and save 16 bytes per file, which matters for short clips
#: whose whole payload is a few hundred bytes.
MODEL_ID_BYTES = 16

# magic, version, coder, bits, T, S, flags, kept mask, model id, frames, height, width,
# fps numerator, fps denominator, latent frames per chunk
_HEADER = struct.Struct("<4sBBBBBBI16sIHHIHH")
HEADER_SIZE = _HEADER.size + 4  # + CRC32
# chunk index, latent frames in the chunk, payload bytes
_CHUNK_HEAD = struct.Struct("<IHI")
CHUNK_HEAD_SIZE = _CHUNK_HEAD.size
CHUNK_OVERHEAD = CHUNK_HEAD_SIZE + 4  # + CRC32

# Limits checked before any allocation. They are far above real use (a 4K frame is 8K tokens at
# 16x compression) and keep a hostile header from asking for gigabytes.
MAX_COMPRESSION = 64
MAX_FRAMES = 1 << 24
MAX_CHUNK_TOKENS = 1 << 21  # tokens in one chunk: (latent frames) x h' x w'
#: A binary symbol costs at most ~11 bits under the context model (its probabilities stay within
#: [31/65536, 1 - 31/65536]) and 8 bits under the static model (1/256 steps), so a valid payload
#: never exceeds 2 bytes per symbol; a larger declared length is corruption.
MAX_PAYLOAD_BYTES_PER_SYMBOL = 2
PAYLOAD_SLACK_BYTES = 64


class VistokFormatError(VistokError):
    """The bytes are not a valid ``.vtok`` file (or not one this version or model can read)."""


class ModelMismatchError(VistokFormatError):
    """The file was written with another tokenizer than the one given (or none could be found)."""


@dataclass(frozen=True)
class Header:
    """What the file header records. ``model_id`` is the hex prefix (32 hex digits) of the
    tokenizer's ``model_id()``; ``kept_mask`` has bit ``d`` set when LFQ channel ``d`` is coded
    (a dropped channel is decoded as a zero code)."""

    coder: int
    bits: int
    temporal_compression: int
    spatial_compression: int
    kept_mask: int
    model_id: str
    frames: int
    height: int
    width: int
    fps: Fraction
    chunk_latent_frames: int
    version: int = VERSION

    # -- derived ----------------------------------------------------------------------------------

    @property
    def coder_name(self) -> str:
        return CODER_NAMES[self.coder]

    @property
    def kept_channels(self) -> list[int]:
        return [d for d in range(self.bits) if self.kept_mask >> d & 1]

    @property
    def latent_frames(self) -> int:
        return 1 + (self.frames - 1) // self.temporal_compression

    @property
    def latent_size(self) -> tuple[int, int]:
        s = self.spatial_compression
        return self.height // s, self.width // s

    @property
    def tokens(self) -> int:
        h, w = self.latent_size
        return self.latent_frames * h * w

    @property
    def pixels(self) -> int:
        """``frames * height * width`` (per colour channel)."""
        return self.frames * self.height * self.width

    def chunk_size(self, index: int) -> int:
        """Latent frames of chunk ``index``: ``1 + C`` for the first (the first frame is coded alone
        by the causal tokenizer and travels with the first chunk), then ``C`` each, the last one
        shorter."""
        c, total = self.chunk_latent_frames, self.latent_frames
        start = 0 if index == 0 else 1 + c * index
        end = min(1 + c * (index + 1), total)
        return end - start

    @property
    def num_chunks(self) -> int:
        left = self.latent_frames - 1 - self.chunk_latent_frames
        return 1 + max(0, -(-left // self.chunk_latent_frames))

    def chunk_sizes(self) -> list[int]:
        """Latent frames of every chunk (see :meth:`chunk_size`). Readers iterate with
        ``chunk_size`` instead, so a hostile header cannot make them build a huge list."""
        return [self.chunk_size(i) for i in range(self.num_chunks)]

    def side_bytes(self) -> int:
        """Bytes of per-chunk model side information (the static model's probabilities)."""
        return len(self.kept_channels) if self.coder == CODER_STATIC else 0

    def max_payload_bytes(self, latent_frames: int) -> int:
        h, w = self.latent_size
        symbols = latent_frames * h * w * len(self.kept_channels)
        return symbols * MAX_PAYLOAD_BYTES_PER_SYMBOL + PAYLOAD_SLACK_BYTES

    # -- bytes ------------------------------------------------------------------------------------

    def validate(self) -> "Header":
        """Raise :class:`VistokFormatError` unless every field is within the format's limits."""
        bad = _header_problem(self)
        if bad:
            raise VistokFormatError(f"invalid .vtok header: {bad}")
        return self

    def pack(self) -> bytes:
        self.validate()
        body = _HEADER.pack(
            MAGIC,
            self.version,
            self.coder,
            self.bits,
            self.temporal_compression,
            self.spatial_compression,
            0,  # flags: none defined in version 1
            self.kept_mask,
            bytes.fromhex(self.model_id),
            self.frames,
            self.height,
            self.width,
            self.fps.numerator,
            self.fps.denominator,
            self.chunk_latent_frames,
        )
        return body + struct.pack("<I", zlib.crc32(body))

    @classmethod
    def unpack(cls, data: bytes) -> "Header":
        if len(data) < 4 or data[:4] != MAGIC:
            raise VistokFormatError("not a .vtok file (the magic bytes 'VTOK' are missing)")
        if len(data) < HEADER_SIZE:
            raise VistokFormatError(f"truncated .vtok file: the header needs {HEADER_SIZE} bytes, got {len(data)}")
        body, (crc,) = data[: _HEADER.size], struct.unpack("<I", data[_HEADER.size : HEADER_SIZE])
        # The version is read before the CRC so a future file says "newer version", not "damaged".
        if body[4] != VERSION:
            raise VistokFormatError(f".vtok format version {body[4]} is not supported (this vistok reads {VERSION})")
        if zlib.crc32(body) != crc:
            raise VistokFormatError(".vtok header checksum mismatch: the file is damaged")
        (_, version, coder, bits, tc, sc, flags, mask, mid, frames, h, w, num, den, chunk) = _HEADER.unpack(body)
        if flags != 0:
            raise VistokFormatError(f"invalid .vtok header: unknown flags {flags:#04x}")
        if num == 0 or den == 0:
            raise VistokFormatError(f"invalid .vtok header: frame rate {num}/{den}")
        header = cls(coder, bits, tc, sc, mask, mid.hex(), frames, h, w, Fraction(num, den), chunk, version)
        return header.validate()


def _header_problem(h: Header) -> str | None:
    if h.version != VERSION:
        return f"version {h.version}"
    if h.coder not in CODER_NAMES:
        return f"unknown entropy coder id {h.coder}"
    if not 1 <= h.bits <= MAX_BITS:
        return f"token bits {h.bits} outside [1, {MAX_BITS}]"
    if not 0 <= h.kept_mask < (1 << h.bits):
        return f"kept-bit mask {h.kept_mask:#x} has bits beyond the {h.bits} token bits"
    for name, v in (("temporal", h.temporal_compression), ("spatial", h.spatial_compression)):
        if not 1 <= v <= MAX_COMPRESSION:
            return f"{name} compression {v} outside [1, {MAX_COMPRESSION}]"
    if len(h.model_id) != 2 * MODEL_ID_BYTES:
        return f"model id must be {2 * MODEL_ID_BYTES} hex digits"
    if not 1 <= h.frames <= MAX_FRAMES or (h.frames - 1) % h.temporal_compression:
        return f"{h.frames} frames (expected 1 + {h.temporal_compression}k, at most {MAX_FRAMES})"
    s = h.spatial_compression
    if not (1 <= h.height <= 0xFFFF and 1 <= h.width <= 0xFFFF) or h.height % s or h.width % s:
        return f"picture size {h.height}x{h.width} (expected multiples of {s} below 65536)"
    if not (0 < h.fps <= MAX_FPS and h.fps.numerator <= 0xFFFFFFFF and h.fps.denominator <= 0xFFFF):
        return f"frame rate {h.fps} (expected above 0 and at most {MAX_FPS})"
    if not 1 <= h.chunk_latent_frames <= 0xFFFF:
        return f"latent frames per chunk {h.chunk_latent_frames}"
    lh, lw = h.latent_size
    largest = min(1 + h.chunk_latent_frames, h.latent_frames) * lh * lw  # the first chunk is the largest
    if largest > MAX_CHUNK_TOKENS:
        return f"a chunk would hold {largest} tokens (at most {MAX_CHUNK_TOKENS}; use shorter chunks)"
    return None


def fps_fraction(fps: float | Fraction) -> Fraction:
    """A frame rate as the rational the header stores (denominators up to 1001 keep NTSC exact)."""
    if not isinstance(fps, Fraction) and not (isinstance(fps, (int, float)) and math.isfinite(fps)):
        raise VistokError(f"fps must be a positive finite number, got {fps!r}")
    f = Fraction(fps).limit_denominator(1001)
    if not 0 < f <= MAX_FPS:
        raise VistokError(f"fps must be above 0 and at most {MAX_FPS}, got {fps!r}")
    return f


# -- chunks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One chunk record: its entropy model's side information and the coded words."""

    index: int
    latent_frames: int
    side: bytes
    payload: bytes


def pack_chunk(chunk: Chunk) -> bytes:
    head = _CHUNK_HEAD.pack(chunk.index, chunk.latent_frames, len(chunk.payload))
    body = head + chunk.side + chunk.payload
    return body + struct.pack("<I", zlib.crc32(body))


def _read_exact(stream: BinaryIO, n: int, what: str) -> bytes:
    data = stream.read(n)
    if data is None or len(data) != n:
        got = 0 if data is None else len(data)
        raise VistokFormatError(f"truncated .vtok file: {what} needs {n} bytes, only {got} left")
    return data


def read_header(stream: BinaryIO) -> Header:
    """Read and check the header at the stream's position."""
    first = stream.read(HEADER_SIZE)
    return Header.unpack(first or b"")


def read_chunk(stream: BinaryIO, header: Header, index: int, latent_frames: int) -> Chunk:
    """Read chunk ``index`` (expected to hold ``latent_frames`` latent frames) and verify its CRC.

    The declared payload length is bounded by what that many tokens can legitimately cost before
    it is read, so memory stays bounded whatever the bytes say.
    """
    head = _read_exact(stream, CHUNK_HEAD_SIZE, f"the head of chunk {index}")
    got_index, got_frames, payload_bytes = _CHUNK_HEAD.unpack(head)
    if got_index != index:
        raise VistokFormatError(f"damaged .vtok file: expected chunk {index}, found chunk {got_index}")
    if got_frames != latent_frames:
        raise VistokFormatError(
            f"damaged .vtok file: chunk {index} holds {got_frames} latent frames, the header implies {latent_frames}"
        )
    limit = header.max_payload_bytes(latent_frames)
    if payload_bytes > limit or payload_bytes % 4:
        raise VistokFormatError(
            f"damaged .vtok file: chunk {index} declares {payload_bytes} payload bytes "
            f"(at most {limit}, a multiple of 4)"
        )
    side_bytes = header.side_bytes()
    rest = _read_exact(stream, side_bytes + payload_bytes + 4, f"chunk {index}")
    (crc,) = struct.unpack("<I", rest[-4:])
    if zlib.crc32(head + rest[:-4]) != crc:
        raise VistokFormatError(f"damaged .vtok file: checksum mismatch in chunk {index}")
    return Chunk(index, latent_frames, rest[:side_bytes], rest[side_bytes:-4])


def check_end(stream: BinaryIO) -> None:
    """Raise unless the stream is at its end (trailing bytes mean a damaged or spliced file)."""
    if stream.read(1):
        raise VistokFormatError("damaged .vtok file: unexpected bytes after the last chunk")
