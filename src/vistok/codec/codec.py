"""Tokens as a compressed format: ``compress(tokenizer, video) -> bytes`` and back.

The pipeline (DESIGN.md, "Data flow")::

    video --Tokenizer.encode_stream--> indices --to_planes--> bits --entropy model--> .vtok chunks
    .vtok --entropy model--> bits --> indices --LFQ.indices_to_codes--> codes --Tokenizer.decode--> video

Both directions stream one temporal chunk at a time: the tokenizer's causal encoder and decoder
carry their state across chunks (exact streaming), and each chunk's tokens are entropy-coded on
their own, so memory is bounded by the chunk size however long the clip is.

Rates below the tokenizer's fixed ``K`` bits per token come from dropping low-order LFQ bits:
dropped channels are not coded at all, and the decoder receives a zero code for them (the middle of
``{-s, +s}``) -- see ``LFQ.indices_to_codes(kept_channels=...)``.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from vistok.codec.container import (
    CHUNK_OVERHEAD,
    HEADER_SIZE,
    MODEL_ID_BYTES,
    Chunk,
    Header,
    ModelMismatchError,
    VistokFormatError,
    check_end,
    fps_fraction,
    pack_chunk,
    read_chunk,
)
from vistok.codec.container import read_header as _read_header_stream
from vistok.codec.entropy import CodedChunk, from_planes, get_model, to_planes
from vistok.errors import VistokError
from vistok.limits import DEFAULT_MAX_FRAME_PIXELS
from vistok.nn.causal_conv import streaming
from vistok.tokenizers.base import Tokenizer, split_clip
from vistok.tokenizers.registry import candidate_model_dirs, find_model_dir, load_tokenizer

#: ``decompress`` refuses files whose video has more pixel positions (frames x height x width)
#: than this unless told otherwise: 2^28 is e.g. 290 frames of 1080p, ~800 MB as uint8 RGB.
DEFAULT_MAX_PIXELS = 1 << 28
#: Frames per entropy-coded chunk (after the first frame) unless given. Each chunk restarts the
#: adaptive model, and learning its statistics is what costs: with the default model on the
#: held-out clip, 32-frame chunks cost 9 % more bits than one 117-frame chunk (8-frame chunks 21 %).
#: 128 frames is ~4-5 s of video, a usual keyframe interval.
DEFAULT_CHUNK_FRAMES = 128
#: ... capped so that a chunk holds at most this many tokens (2^20: 33 latent frames of 1080p).
AUTO_CHUNK_TOKENS = 1 << 20
#: Frames the tokenizer's encoder and decoder see at once. Independent of the container's chunks
#: (tokens are re-grouped), so network memory stays small whatever the chunk length.
PIECE_FRAMES = 16


# -- tokens <-> codes ---------------------------------------------------------------------------


def kept_mask(bits: int, kept_bits: int | Sequence[int] | None) -> int:
    """The header's kept-channel mask. ``None``: every channel; an int ``n``: the ``n`` most
    significant channels (dropping the ``K - n`` least significant); a sequence: those channels."""
    if kept_bits is None:
        return (1 << bits) - 1
    if isinstance(kept_bits, (int, np.integer)) and not isinstance(kept_bits, bool):
        n = int(kept_bits)
        if not 0 <= n <= bits:
            raise VistokError(f"kept_bits must be in [0, {bits}], got {n}")
        return ((1 << bits) - 1) ^ ((1 << (bits - n)) - 1)
    channels = [int(d) for d in kept_bits]
    if any(not 0 <= d < bits for d in channels) or len(set(channels)) != len(channels):
        raise VistokError(f"kept_bits must list distinct channels in [0, {bits}), got {channels}")
    return sum(1 << d for d in channels)


def _lfq(tokenizer: Tokenizer):
    q = getattr(tokenizer, "quantizer", None)
    if q is None or not hasattr(q, "bits") or not hasattr(q, "code_scale"):
        raise VistokError(f"the codec codes LFQ tokens; {type(tokenizer).__name__} has no LFQ quantizer")
    return q


def _model_id(tokenizer: Tokenizer) -> str:
    return tokenizer.model_id()[: 2 * MODEL_ID_BYTES]


# -- statistics ---------------------------------------------------------------------------------


@dataclass
class CompressStats:
    """Sizes of one compressed file, real and estimated (CompressAI habit: both side by side).

    ``info_bits`` is the entropy models' own estimate of the payload (``sum -log2 p`` over every coded
    bit); ``payload_bits`` is what the range coder wrote. ``total_bytes`` is ``len(file)``.
    """

    coder: str
    tokens: int = 0
    kept_bits: int = 0
    symbols: int = 0
    chunks: int = 0
    header_bytes: int = HEADER_SIZE
    chunk_overhead_bytes: int = 0
    side_bytes: int = 0
    payload_bytes: int = 0
    info_bits: float = 0.0
    pixels: int = 0

    @property
    def total_bytes(self) -> int:
        return self.header_bytes + self.chunk_overhead_bytes + self.side_bytes + self.payload_bytes

    @property
    def total_bits(self) -> int:
        return 8 * self.total_bytes

    @property
    def bits_per_token(self) -> float:
        """Coded bits (payload and side information, no framing) per token."""
        return 8 * (self.payload_bytes + self.side_bytes) / max(self.tokens, 1)

    @property
    def info_bits_per_token(self) -> float:
        return self.info_bits / max(self.tokens, 1)

    @property
    def bits_per_pixel(self) -> float:
        """The whole file's bits per pixel position (``frames x height x width``)."""
        return self.total_bits / max(self.pixels, 1)

    def add(self, coded: CodedChunk, tokens: int) -> None:
        self.tokens += tokens
        self.symbols += coded.symbols
        self.chunks += 1
        self.chunk_overhead_bytes += CHUNK_OVERHEAD
        self.side_bytes += len(coded.side)
        self.payload_bytes += len(coded.payload)
        self.info_bits += coded.info_bits

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            total_bytes=self.total_bytes,
            bits_per_token=self.bits_per_token,
            info_bits_per_token=self.info_bits_per_token,
            bits_per_pixel=self.bits_per_pixel,
        )
        return d

    def summary(self) -> str:
        return (
            f"{self.total_bytes} bytes ({self.bits_per_pixel:.4f} bpp): {self.coder} model, "
            f"{self.bits_per_token:.3f} bits/token coded vs {self.info_bits_per_token:.3f} estimated, "
            f"{self.kept_bits} bit(s) kept of each token, {self.tokens} tokens in {self.chunks} chunk(s)"
        )


# -- writing ------------------------------------------------------------------------------------


def make_header(
    tokenizer: Tokenizer,
    *,
    frames: int,
    height: int,
    width: int,
    fps: float | Fraction = 25.0,
    entropy: str = "context",
    kept_bits: int | Sequence[int] | None = None,
    chunk_frames: int | None = None,
    model_id: str | None = None,
) -> Header:
    """The header of a file holding a ``frames x height x width`` clip coded by ``tokenizer``.

    ``chunk_frames``: pixel frames per entropy-coded chunk after the first (a multiple of the
    tokenizer's temporal factor); the first chunk also holds frame 0. None: ``DEFAULT_CHUNK_FRAMES``,
    shortened for large pictures so a chunk holds at most ``AUTO_CHUNK_TOKENS`` tokens.
    ``model_id``: the tokenizer's id when already known (computing it hashes every weight).
    """
    q = _lfq(tokenizer)
    tc, sc = tokenizer.temporal_compression, tokenizer.spatial_compression
    if chunk_frames is None:
        per_frame = max((height // sc) * (width // sc), 1)
        chunk_frames = tc * max(1, min(DEFAULT_CHUNK_FRAMES // tc, AUTO_CHUNK_TOKENS // per_frame - 1))
    if chunk_frames < tc or chunk_frames % tc:
        raise VistokError(f"chunk_frames must be a positive multiple of {tc}, got {chunk_frames}")
    header = Header(
        coder=get_model(entropy).coder_id,
        bits=q.bits,
        temporal_compression=tc,
        spatial_compression=sc,
        kept_mask=kept_mask(q.bits, kept_bits),
        model_id=(model_id or tokenizer.model_id())[: 2 * MODEL_ID_BYTES],
        frames=int(frames),
        height=int(height),
        width=int(width),
        fps=fps_fraction(fps),
        chunk_latent_frames=chunk_frames // tc,
    )
    try:
        return header.validate()
    except VistokFormatError as e:
        raise VistokError(str(e).replace("invalid .vtok header", "cannot compress this clip")) from None


def encode_chunk(header: Header, index: int, indices: Tensor | np.ndarray) -> tuple[bytes, CodedChunk]:
    """Entropy-code chunk ``index`` (``(t' h' w')`` tokens) into its framed record."""
    idx = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices, dtype=np.int64)
    lh, lw = header.latent_size
    n = header.chunk_size(index) if index < header.num_chunks else 0
    if idx.shape != (n, lh, lw) or n == 0:
        want = (n, lh, lw) if n else "none (the clip has ended)"
        raise VistokError(f"chunk {index}: expected tokens of shape {want}, got {idx.shape}")
    coded = get_model(header.coder).encode(to_planes(idx, header.kept_channels))
    return pack_chunk(Chunk(index, n, coded.side, coded.payload)), coded


def iter_compress_indices(
    header: Header, index_chunks: Iterable[Tensor | np.ndarray], stats: CompressStats | None = None
) -> Iterator[bytes]:
    """The file as byte pieces (header, then one record per chunk) from ``(t' h' w')`` token chunks
    that follow ``header.chunk_sizes()``. ``stats``, when given, is filled in as chunks go."""
    if stats is not None:
        stats.kept_bits = len(header.kept_channels)
        stats.pixels = header.pixels
    yield header.pack()
    count = 0
    for i, idx in enumerate(index_chunks):
        record, coded = encode_chunk(header, i, idx)
        if stats is not None:
            stats.add(coded, int(np.prod(coded_shape(header, i))))
        count += 1
        yield record
    if count != header.num_chunks:
        raise VistokError(f"the clip ended after {count} chunk(s); the header announced {header.num_chunks}")


def coded_shape(header: Header, index: int) -> tuple[int, int, int]:
    lh, lw = header.latent_size
    return header.chunk_size(index), lh, lw


def split_indices(header: Header, indices: Tensor | np.ndarray) -> list[np.ndarray]:
    """Cut a whole ``(t' h' w')`` token grid into the header's chunks."""
    idx = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices, dtype=np.int64)
    if idx.ndim == 4 and idx.shape[0] == 1:
        idx = idx[0]
    want = (header.latent_frames, *header.latent_size)
    if idx.shape != want:
        raise VistokError(f"expected tokens of shape {want} for this header, got {tuple(idx.shape)}")
    out, start = [], 0
    for n in header.chunk_sizes():
        out.append(idx[start : start + n])
        start += n
    return out


def compress_indices(
    tokenizer: Tokenizer,
    indices: Tensor | np.ndarray,
    *,
    fps: float | Fraction = 25.0,
    entropy: str = "context",
    kept_bits: int | Sequence[int] | None = None,
    chunk_frames: int | None = None,
    model_id: str | None = None,
    stats: CompressStats | None = None,
) -> bytes:
    """Entropy-code tokens already computed by ``tokenizer.encode`` (``(t' h' w')`` or
    ``(1 t' h' w')``). Bits outside ``kept_bits`` are dropped. Options as :func:`compress`."""
    idx = np.asarray(indices.cpu() if isinstance(indices, Tensor) else indices, dtype=np.int64)
    if idx.ndim == 4 and idx.shape[0] == 1:
        idx = idx[0]
    if idx.ndim != 3:
        raise VistokError(f"expected tokens of shape (t', h', w'); got {tuple(idx.shape)}")
    tc, sc = tokenizer.temporal_compression, tokenizer.spatial_compression
    header = make_header(
        tokenizer,
        frames=1 + tc * (idx.shape[0] - 1),
        height=idx.shape[1] * sc,
        width=idx.shape[2] * sc,
        fps=fps,
        entropy=entropy,
        kept_bits=kept_bits,
        chunk_frames=chunk_frames,
        model_id=model_id,
    )
    vocab = 1 << header.bits
    if idx.size and (idx.min() < 0 or idx.max() >= vocab):
        raise VistokError(f"tokens must lie in [0, {vocab}), got [{idx.min()}, {idx.max()}]")
    return b"".join(iter_compress_indices(header, split_indices(header, idx), stats))


def _regroup(pieces: Iterable[np.ndarray], header: Header) -> Iterator[np.ndarray]:
    """Token pieces of any length (as the tokenizer streams them) -> the header's chunks."""
    buffer: list[np.ndarray] = []
    have, index = 0, 0
    for piece in pieces:
        buffer.append(piece)
        have += piece.shape[0]
        while index < header.num_chunks and have >= header.chunk_size(index):
            joined = np.concatenate(buffer)
            n = header.chunk_size(index)
            yield joined[:n]
            buffer, have, index = [joined[n:]], have - n, index + 1
    if have:
        yield np.concatenate(buffer)  # more tokens than the header announced: encode_chunk refuses


def iter_compress(
    tokenizer: Tokenizer,
    pieces: Iterable[Tensor],
    *,
    frames: int,
    height: int,
    width: int,
    fps: float | Fraction = 25.0,
    entropy: str = "context",
    kept_bits: int | Sequence[int] | None = None,
    chunk_frames: int | None = None,
    stats: CompressStats | None = None,
) -> Iterator[bytes]:
    """Stream a long clip into ``.vtok`` byte pieces with bounded memory.

    ``pieces``: ``(1 c t h w)`` pixel pieces of one ``frames x height x width`` clip in [-1, 1] as
    the tokenizer streams them: the first with ``1 + T k`` frames, then multiples of ``T`` (e.g.
    :func:`vistok.tokenizers.base.split_clip` or ``vistok.pipelines.reconstruct.iter_input_chunks``). Their
    tokens are regrouped into the file's chunks (``chunk_frames``, see :func:`make_header`), so
    memory holds one piece of pixels and one chunk of tokens.
    """
    header = make_header(
        tokenizer, frames=frames, height=height, width=width, fps=fps, entropy=entropy,
        kept_bits=kept_bits, chunk_frames=chunk_frames,
    )
    dtype = next(tokenizer.parameters()).dtype

    def token_pieces():
        for piece in tokenizer.encode_stream(p.to(dtype) for p in pieces):
            if piece.shape[0] != 1:
                raise VistokError(f"a .vtok file holds one video; got a batch of {piece.shape[0]}")
            yield piece[0].cpu().numpy() & header.kept_mask

    yield from iter_compress_indices(header, _regroup(token_pieces(), header), stats)


def compress(
    tokenizer: Tokenizer,
    video: Tensor,
    *,
    fps: float | Fraction = 25.0,
    entropy: str = "context",
    kept_bits: int | Sequence[int] | None = None,
    chunk_frames: int | None = None,
    stats: CompressStats | None = None,
) -> bytes:
    """Compress ``video`` (``(1 c t h w)`` or ``(c t h w)`` in [-1, 1], ``t = 1 + T k``, sides
    divisible by the tokenizer's spatial factor) into ``.vtok`` bytes.

    Args:
        entropy: ``"context"`` (adaptive, conditioned on decoded neighbours; smaller) or
            ``"static"`` (one fitted probability per bit and chunk).
        kept_bits: code only these LFQ channels (see :func:`kept_mask`); fewer bits, lower rate.
        chunk_frames: frames per independently decodable chunk after the first (see
            :func:`make_header`; None picks ``DEFAULT_CHUNK_FRAMES`` within a token budget).
        stats: filled in with the real and estimated sizes.
    """
    if not isinstance(video, Tensor):
        raise VistokError(f"expected a video tensor (1 c t h w); got {type(video).__name__}")
    if video.ndim == 4:
        video = video.unsqueeze(0)
    if video.ndim != 5 or video.shape[0] != 1:
        raise VistokError(f"a .vtok file holds one video: expected (1 c t h w) or (c t h w); got {tuple(video.shape)}")
    tokenizer.check_video(video)
    _, _, t, h, w = video.shape
    tc = tokenizer.temporal_compression
    pieces = split_clip(video, max(tc, PIECE_FRAMES // tc * tc), tc)
    return b"".join(
        iter_compress(
            tokenizer, pieces, frames=t, height=h, width=w, fps=fps, entropy=entropy,
            kept_bits=kept_bits, chunk_frames=chunk_frames, stats=stats,
        )
    )


# -- reading ------------------------------------------------------------------------------------


def _as_stream(data) -> BinaryIO:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(data))
    if hasattr(data, "read"):
        return data
    raise VistokError(f"expected .vtok bytes or a binary file object; got {type(data).__name__}")


def read_header(data) -> Header:
    """The header of ``.vtok`` bytes (or of a binary file object, read from its position)."""
    return _read_header_stream(_as_stream(data))


def check_limits(header: Header, max_pixels: int | None, max_frame_pixels: int | None = None) -> None:
    if max_pixels is not None and header.pixels > max_pixels:
        raise VistokFormatError(
            f"the file declares {header.frames} frames of {header.height}x{header.width} "
            f"({header.pixels} pixels), more than max_pixels={max_pixels}; raise the limit to decode it"
        )
    if max_frame_pixels is not None and header.height * header.width > max_frame_pixels:
        raise VistokFormatError(
            f"the file declares {header.width}x{header.height} frames ({header.height * header.width} pixels each), "
            f"more than max_frame_pixels={max_frame_pixels}; decoding them needs memory in proportion, raise the "
            "limit to decode it"
        )


def _iter_chunks(
    stream: BinaryIO, header: Header, start_chunk: int = 0
) -> Iterator[tuple[Header, int, np.ndarray]]:
    """Decode the chunks that follow ``header`` in ``stream``."""
    if not 0 <= start_chunk < header.num_chunks:
        raise VistokError(f"start_chunk must be in [0, {header.num_chunks}), got {start_chunk}")
    model, channels, (lh, lw) = get_model(header.coder), header.kept_channels, header.latent_size
    for i in range(header.num_chunks):
        n = header.chunk_size(i)
        chunk = read_chunk(stream, header, i, n)
        if i < start_chunk:
            continue  # verified but not entropy-decoded: chunks are coded independently
        planes = model.decode(chunk.side, chunk.payload, (n, len(channels), lh, lw))
        yield header, i, from_planes(planes, channels)
    check_end(stream)


def iter_decompress_indices(
    data, *, start_chunk: int = 0, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> Iterator[tuple[Header, int, np.ndarray]]:
    """Yield ``(header, chunk index, (t' h' w') int64 tokens)`` chunk by chunk.

    Tokens of dropped channels are 0. ``start_chunk`` skips the chunks before it without
    entropy-decoding them (each chunk is coded independently). Raises :class:`VistokFormatError`
    for anything wrong with the bytes -- possibly after earlier chunks were yielded.
    """
    stream = _as_stream(data)
    header = _read_header_stream(stream)
    check_limits(header, max_pixels)
    yield from _iter_chunks(stream, header, start_chunk)


def decompress_indices(data, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Header, np.ndarray]:
    """``.vtok`` bytes -> (header, ``(t' h' w')`` int64 tokens); no tokenizer needed."""
    header, parts = None, []
    for header, _, idx in iter_decompress_indices(data, max_pixels=max_pixels):
        parts.append(idx)
    return header, np.concatenate(parts)


def find_tokenizer(model_id: str, models: Iterable[str | Path | Tokenizer] = ()) -> Tokenizer:
    """The tokenizer whose ``model_id()`` starts with ``model_id``.

    Looks in ``models`` (tokenizers, saved-model directories, run directories, or folders whose
    subfolders are saved models), then at the models shipped in the package. A directory's
    ``config.json`` records its id, so non-matching models are skipped without loading them; a
    match is confirmed by hashing the loaded weights. Raises :class:`ModelMismatchError`.
    """
    prefix = model_id[: 2 * MODEL_ID_BYTES].lower()
    paths: list[str | Path] = []
    for m in models:
        if isinstance(m, Tokenizer):
            if _model_id(m) == prefix:
                return m
        else:
            paths.append(m)
    for d in find_model_dir(prefix, paths):
        try:
            tok = load_tokenizer(d)
        except VistokError:
            continue
        if _model_id(tok) == prefix:
            return tok
    candidates = list(candidate_model_dirs(paths))
    searched = ", ".join(str(d) for d in candidates) or "nothing (no models given, no shipped models)"
    raise ModelMismatchError(
        f"no tokenizer with model id {prefix[:12]}… found; searched {searched}. "
        "Pass the model the file was written with (tokenizer= / models=, or --model)"
    )


def resolve_tokenizer(header: Header, tokenizer: Tokenizer | None, models: Iterable = ()) -> Tokenizer:
    """``tokenizer`` if it is the one the file names (else :class:`ModelMismatchError`), or the
    matching one from ``models`` and the shipped models."""
    if tokenizer is None:
        return find_tokenizer(header.model_id, models)
    got = _model_id(tokenizer)
    if got != header.model_id:
        raise ModelMismatchError(
            f"the file was written with model {header.model_id[:12]}…, but the tokenizer given is "
            f"{got[:12]}…; decoding with another model would give garbage"
        )
    q = _lfq(tokenizer)
    if (q.bits, tokenizer.temporal_compression, tokenizer.spatial_compression) != (
        header.bits, header.temporal_compression, header.spatial_compression
    ):
        raise ModelMismatchError("the tokenizer's token bits or compression factors differ from the file's")
    return tokenizer


def iter_decompress(
    data,
    tokenizer: Tokenizer | None = None,
    *,
    models: Iterable = (),
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS,
    piece_frames: int = PIECE_FRAMES,
) -> Iterator[Tensor]:
    """Decode a ``.vtok`` stream to ``(1 c t h w)`` pixel pieces in [-1, 1] as the network
    produces them (``piece_frames`` frames at a time, a multiple of the temporal factor; a file
    chunk's first piece is shorter or longer by the frames its first latent frame holds), with
    memory bounded by one piece and one chunk of tokens; the pieces concatenate to exactly
    ``decompress(data)``. ``max_pixels`` caps ``frames x height x width``, ``max_frame_pixels``
    ``height x width``."""
    stream = _as_stream(data)
    header = _read_header_stream(stream)
    check_limits(header, max_pixels, max_frame_pixels)
    tok = resolve_tokenizer(header, tokenizer, models)
    yield from _decode_pixels(tok, header, (idx for _, _, idx in _iter_chunks(stream, header)), piece_frames)


@torch.no_grad()
def _decode_pixels(tok: Tokenizer, header: Header, index_chunks: Iterable[np.ndarray],
                   piece_frames: int = PIECE_FRAMES) -> Iterator[Tensor]:
    """Decode token chunks to pixel pieces; the network sees ``piece_frames``-frame pieces."""
    tc = header.temporal_compression
    if piece_frames < tc or piece_frames % tc:
        raise VistokError(f"piece_frames must be a positive multiple of {tc}, got {piece_frames}")
    q = _lfq(tok)
    dtype = next(tok.parameters()).dtype
    device = next(tok.parameters()).device
    step = piece_frames // tc
    with streaming(tok.decoder):
        for idx in index_chunks:
            for start in range(0, idx.shape[0], step):
                piece = torch.from_numpy(np.ascontiguousarray(idx[start : start + step])).long().unsqueeze(0)
                codes = q.indices_to_codes(piece, dtype, kept_channels=header.kept_channels)
                yield tok.decode(codes.to(device)).float().clamp(-1.0, 1.0)


def decompress(
    data,
    tokenizer: Tokenizer | None = None,
    *,
    models: Iterable = (),
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_frame_pixels: int | None = DEFAULT_MAX_FRAME_PIXELS,
) -> Tensor:
    """``.vtok`` bytes -> ``video (1 c t h w)`` in [-1, 1].

    ``tokenizer``: the model the file was written with (checked against the file's model id); when
    None it is looked up in ``models`` and the shipped default (:func:`find_tokenizer`). Every
    chunk is read and verified before any pixel is decoded, so a damaged file raises
    :class:`VistokFormatError` (and only that) without running the network.
    ``max_pixels`` caps ``frames x height x width``, ``max_frame_pixels`` ``height x width`` (None:
    no cap).
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        # The model is resolved from the header first: a missing model fails before any decoding.
        header = read_header(data)
        check_limits(header, max_pixels, max_frame_pixels)
        tok = resolve_tokenizer(header, tokenizer, models)
        header, indices = decompress_indices(data, max_pixels=max_pixels)
    else:
        header, indices = decompress_indices(data, max_pixels=max_pixels)
        check_limits(header, max_pixels, max_frame_pixels)
        tok = resolve_tokenizer(header, tokenizer, models)
    pieces, start = [], 0
    for n in header.chunk_sizes():
        pieces.append(indices[start : start + n])
        start += n
    return torch.cat(list(_decode_pixels(tok, header, pieces)), dim=2)
