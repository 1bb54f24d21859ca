"""The baselines a tokenizer is judged against: each ``block x block`` block's mean colour (the
trivial one: what a tokenizer must beat to be worth its tokens), and x264 / x265 through PyAV (its wheel bundles libx264 and libx265): encode a clip at a
given CRF into a raw Annex-B bitstream in memory, measure its size, decode it back.

What is counted. The raw elementary stream, no container: parameter sets (VPS/SPS/PPS) and slice
data, i.e. everything a decoder needs. SEI messages are removed before measuring: they carry no
picture data, and x264 writes a ~600-byte SEI with its version and settings into every stream
(x265's equivalent is switched off with ``info=0``), which on a 17-frame 64x64 clip would be a
third of the file. The stripped stream is what gets decoded, so the counted bits really decode to
the measured pictures.

Colour: frames enter as RGB and are converted to ``pix_fmt`` (yuv420p by default, what these
codecs are normally deployed with) by libswscale, and back to RGB after decoding with the same
conversion; PSNR is measured in RGB, as for vistok. The 4:2:0 round trip alone caps RGB PSNR
(~40-45 dB on natural video), which only matters at the highest rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from vistok.errors import VistokError

# name -> (PyAV encoder, decoder, SEI NAL unit types, how to read the type from the first NAL byte)
CODECS = {
    "x264": ("libx264", "h264", {6}, lambda b: b & 0x1F),
    "x265": ("libx265", "hevc", {39, 40}, lambda b: (b >> 1) & 0x3F),
}


@dataclass
class BaselineResult:
    """One encode: the stripped bitstream, its decoded frames and what was removed."""

    codec: str
    crf: int
    bitstream: bytes
    decoded: np.ndarray  # (t h w 3) uint8
    sei_bytes: int

    @property
    def bits(self) -> int:
        return 8 * len(self.bitstream)


def available(codec: str) -> bool:
    """Whether this PyAV build can encode ``codec`` ("x264" or "x265")."""
    return codec in CODECS and CODECS[codec][0] in av.codecs_available


def nal_units(stream: bytes) -> list[tuple[int, int, int]]:
    """``(begin, payload, end)`` of each NAL unit of an Annex-B byte stream: ``stream[begin:end]``
    is the unit with its start code (``00 00 01``, or ``00 00 00 01``), ``payload`` its first byte
    after the start code. Emulation prevention guarantees ``00 00 01`` occurs nowhere else."""
    heads = []
    i = stream.find(b"\x00\x00\x01")
    while i >= 0:
        heads.append((i - 1 if i > 0 and stream[i - 1] == 0 else i, i + 3))
        i = stream.find(b"\x00\x00\x01", i + 3)
    ends = [begin for begin, _ in heads[1:]] + [len(stream)]
    return [(begin, payload, end) for (begin, payload), end in zip(heads, ends)]


def strip_sei(stream: bytes, codec: str) -> tuple[bytes, int]:
    """The stream without its SEI NAL units (others byte for byte as written) and the bytes saved."""
    _, _, sei_types, nal_type = CODECS[codec]
    kept = [stream[b:e] for b, p, e in nal_units(stream) if p < e and nal_type(stream[p]) not in sei_types]
    out = b"".join(kept)
    return out, len(stream) - len(out)


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)


def encode_bitstream(
    frames: np.ndarray, codec: str, crf: int, *, fps: float = 25.0, preset: str = "medium", pix_fmt: str = "yuv420p"
) -> bytes:
    """``(t h w 3)`` uint8 RGB -> raw Annex-B bitstream (SEI included)."""
    if codec not in CODECS:
        raise VistokError(f"unknown baseline codec {codec!r}; choose from {sorted(CODECS)}")
    if not available(codec):
        raise VistokError(f"this PyAV build has no {CODECS[codec][0]} encoder")
    t, h, w, c = frames.shape
    if frames.dtype != np.uint8 or c != 3:
        raise VistokError(f"expected (t h w 3) uint8 frames, got {frames.dtype} {frames.shape}")
    if pix_fmt.startswith("yuv420") and (h % 2 or w % 2):
        raise VistokError(f"{pix_fmt} needs even sizes, got {h}x{w}")
    cc = av.CodecContext.create(CODECS[codec][0], "w")
    cc.width, cc.height, cc.pix_fmt = w, h, pix_fmt
    rate = _rate(fps)
    cc.framerate, cc.time_base = rate, 1 / rate
    options = {"crf": str(int(crf)), "preset": preset}
    if codec == "x265":
        options["x265-params"] = "log-level=none:info=0"
    cc.options = options
    packets = []
    try:
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            packets += [bytes(p) for p in cc.encode(frame)]
        packets += [bytes(p) for p in cc.encode(None)]  # flush delayed (B-)frames
    except av.FFmpegError as e:
        raise VistokError(f"{codec} encoding failed: {e}") from e
    return b"".join(packets)


def decode_bitstream(stream: bytes, codec: str) -> np.ndarray:
    """Annex-B bitstream -> ``(t h w 3)`` uint8 RGB frames in display order."""
    cc = av.CodecContext.create(CODECS[codec][1], "r")
    out = []
    try:
        for packet in cc.parse(stream) + cc.parse(None):
            out += [f.to_ndarray(format="rgb24") for f in cc.decode(packet)]
        out += [f.to_ndarray(format="rgb24") for f in cc.decode(None)]
    except av.FFmpegError as e:
        raise VistokError(f"{codec} decoding failed: {e}") from e
    if not out:
        raise VistokError(f"{codec} bitstream decoded to no frames")
    return np.stack(out)


def run_baseline(
    frames: np.ndarray, codec: str, crf: int, *, fps: float = 25.0, preset: str = "medium", pix_fmt: str = "yuv420p"
) -> BaselineResult:
    """Encode at ``crf``, strip SEI, decode the stripped stream (checked to give every frame)."""
    raw = encode_bitstream(frames, codec, crf, fps=fps, preset=preset, pix_fmt=pix_fmt)
    stream, sei = strip_sei(raw, codec)
    decoded = decode_bitstream(stream, codec)
    if decoded.shape != frames.shape:
        raise VistokError(f"{codec} at CRF {crf} decoded to {decoded.shape}, expected {frames.shape}")
    return BaselineResult(codec, int(crf), stream, decoded, sei)


def block_means(frames: np.ndarray, block: int) -> np.ndarray:
    """Every ``block x block`` block of ``(t h w 3)`` uint8 frames painted its mean colour (rounded);
    a partial block at the right or bottom edge is averaged over the pixels it has."""
    if block < 1:
        raise VistokError(f"block must be >= 1, got {block}")
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3 or f.dtype != np.uint8:
        raise VistokError(f"block_means needs (t h w 3) uint8 frames, got {f.dtype} {f.shape}")
    t, h, w, c = f.shape
    ph, pw = -h % block, -w % block
    x = np.pad(f.astype(np.float64), ((0, 0), (0, ph), (0, pw), (0, 0)))
    ones = np.pad(np.ones((h, w)), ((0, ph), (0, pw)))
    hb, wb = (h + ph) // block, (w + pw) // block
    sums = x.reshape(t, hb, block, wb, block, c).sum(axis=(2, 4))
    counts = ones.reshape(hb, block, wb, block).sum(axis=(1, 3))[None, :, :, None]
    means = np.rint(sums / counts).clip(0, 255).astype(np.uint8)
    return np.repeat(np.repeat(means, block, axis=1), block, axis=2)[:, :h, :w]
