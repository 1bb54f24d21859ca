"""Memory budgets for streaming a video through a tokenizer: ``--max-memory 2G`` -> chunk length.

A streamed clip costs the process a fixed part (the interpreter, torch, the weights: what the
process holds when the work starts) plus the tensors alive while one chunk goes through the
encoder and the decoder, which grow linearly with the chunk's frames and the frame's pixels.
The second part is measured, not guessed: :func:`streaming_peak_bytes` runs the tokenizer's
streaming encode and decode on a copy of it on torch's ``meta`` device (shapes only: no memory,
no arithmetic, milliseconds) under :class:`LiveTensorBytes`, which adds up the bytes of every tensor
an operation creates and subtracts them when the tensor is freed, and keeps the peak. On real
tensors the same count is exact for the tensors torch allocates (tested); what the kernels
allocate inside (oneDNN's reordered copies) and the allocator's retained pages come on top, a
measured factor :data:`HEADROOM`.
:func:`choose_chunk_frames` takes the longest chunk whose fixed part plus measured peak, with the
headroom, fits the budget.
"""

from __future__ import annotations

import copy
import os
import re
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from vistok.errors import VistokError
from vistok.metrics.quality import frame_quality
from vistok.tokenizers.base import Tokenizer

# Resident memory over the counted tensors, measured by bench/reconstruct_memory.py on `default`
# (CPU, 192x144 to 768x576, chunks of 4 to 16): a process holds 0.5 GiB + 3.2-4.1x the counted
# peak -- oneDNN's reordered copies of each convolution's input and output and the allocator's
# retained pages are invisible to a tensor count. 3.75 covers every measured row within 5 %.
HEADROOM = 3.75
RUNTIME_BYTES = 256 * 2**20  # the video decoder and encoder, thread pools: a reconstruct process over its model
MAX_CHUNK_FRAMES = 16  # the former fixed chunk length: the budget only ever shortens it
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """``"2G"``, ``"512M"``, ``"1.5GiB"``, ``"3000000000"`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?[bB])?\s*", str(text))
    if not m:
        raise VistokError(f"cannot read {text!r} as a memory size; expected e.g. 2G, 512M or 1.5GiB")
    value = float(m.group(1)) * _UNITS[m.group(2).upper()]
    if value < 1:
        raise VistokError(f"a memory size must be positive; got {text!r}")
    return int(value)


def format_bytes(n: float) -> str:
    for unit in ("G", "M", "K"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.2f} {unit}iB"
    return f"{int(n)} B"


class LiveTensorBytes(TorchDispatchMode):
    """``with LiveTensorBytes() as m: ...`` -- ``m.peak``: the most bytes held at once by tensors
    created inside the block. Views and in-place results share their input's storage and are not
    counted again; a tensor's bytes are released when it is freed."""

    def __init__(self):
        super().__init__()
        self.now = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if any(r.alias_info is not None for r in func._schema.returns):
            return out  # a view or an in-place result: the input's storage, already counted
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                nbytes = t.untyped_storage().nbytes()
                self.now += nbytes
                self.peak = max(self.peak, self.now)
                weakref.finalize(t, self._free, nbytes)
        return out

    def _free(self, nbytes: int) -> None:
        self.now -= nbytes


def meta_copy(tok: Tokenizer) -> Tokenizer:
    """The tokenizer with its weights on the ``meta`` device (shapes only)."""
    return copy.deepcopy(tok).to("meta")


def streaming_peak_bytes(meta_tok: Tokenizer, height: int, width: int, chunk_frames: int, *,
                         frames: int | None = None, decode: bool = True, metrics: bool = True,
                         encode: bool = True) -> int:
    """Peak bytes of the tensors alive while a clip streams through ``meta_tok`` (a
    :func:`meta_copy`) as the pipelines feed it: the first frame alone, then chunks of
    ``chunk_frames`` (two of them, so the causal caches carried between chunks are counted; fewer
    when the clip has fewer ``frames``): the input chunk, the encoder, the quantizer (``encode``;
    without it the codes are made beforehand and not counted, as when decoding tokens read from a
    file), the decoder (``decode``), and (``metrics``) the quality scores of one frame pair."""
    if not (encode or decode):
        raise VistokError("nothing to plan: neither encoding nor decoding")
    tc = meta_tok.temporal_compression
    if chunk_frames < tc or chunk_frames % tc:
        raise VistokError(f"chunk_frames must be a positive multiple of {tc}; got {chunk_frames}")
    sizes = [1, chunk_frames, chunk_frames]
    if frames is not None:
        rest = max(0, frames - 1)
        sizes = [1] + [min(chunk_frames, rest), min(chunk_frames, rest - chunk_frames)]
        sizes = [n for n in sizes if n > 0]
    weight = next(meta_tok.parameters())  # on "meta" for planning; on "cpu" the same count is exact
    meter = LiveTensorBytes()

    def chunks():
        return (torch.zeros(1, 3, n, height, width, device=weight.device, dtype=weight.dtype) for n in sizes)

    with torch.no_grad():
        made = None if encode else list(meta_tok.encode_codes_stream(chunks()))
    with torch.no_grad(), meter:
        codes = meta_tok.encode_codes_stream(chunks()) if encode else iter(made)
        for out in meta_tok.decode_codes_stream(codes) if decode else codes:
            del out
        if metrics:
            a = torch.zeros(1, 3, height, width, device=weight.device, dtype=torch.float64)
            frame_quality(a, a.clone())
    return meter.peak


def process_bytes() -> int:
    """Resident memory of this process now (bytes; 0 where /proc is missing)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (None where it is missing)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_budget() -> int:
    """What ``--max-memory`` defaults to: what the process holds now plus half of the memory
    available (4 GiB where that cannot be read)."""
    free = available_bytes()
    return process_bytes() + (free // 2 if free else 4 * 2**30)


@dataclass
class ChunkChoice:
    chunk_frames: int
    estimated_bytes: int  # fixed part + headroom * measured peak
    budget: int

    def describe(self) -> str:
        return (f"chunks of {self.chunk_frames} frames: about {format_bytes(self.estimated_bytes)} "
                f"of the {format_bytes(self.budget)} budget")


def choose_chunk_frames(tok: Tokenizer, height: int, width: int, budget: int | None, *, frames: int | None = None,
                        decode: bool = True, metrics: bool = True, fixed: int | None = None,
                        per_frame: int = 0, encode: bool = True) -> ChunkChoice:
    """The longest chunk (a multiple of the temporal factor, at most :data:`MAX_CHUNK_FRAMES` and
    no longer than the clip needs) whose estimate (``fixed``, default what the process holds now
    plus :data:`RUNTIME_BYTES`, plus :data:`HEADROOM` times the measured peak, plus ``per_frame``
    bytes for each frame of the largest chunk, the first one included) fits ``budget`` bytes
    (None: :func:`default_budget`); a clear error when not even the shortest does."""
    budget = default_budget() if budget is None else budget
    tc = tok.temporal_compression
    fixed = process_bytes() + RUNTIME_BYTES if fixed is None else fixed
    meta_tok = meta_copy(tok)
    longest = MAX_CHUNK_FRAMES // tc * tc
    if frames is not None:
        longest = max(tc, min(longest, -(-(frames - 1) // tc) * tc))

    def estimate(chunk: int) -> int:
        peak = streaming_peak_bytes(meta_tok, height, width, chunk, frames=frames, decode=decode, metrics=metrics,
                                    encode=encode)
        return fixed + int(HEADROOM * peak) + per_frame * (chunk + 1)

    shortest = estimate(tc)
    if shortest > budget:
        what = "one frame needs" if frames == 1 else f"in chunks of {tc} frames need"
        raise VistokError(
            f"{width}x{height} frames {what} about {format_bytes(shortest)} (of which {format_bytes(fixed)} is the "
            f"process itself), over the memory budget of {format_bytes(budget)}; raise --max-memory"
            + (", pass --size to shrink the frames, or (reconstruct) --tile to take them in tiles" if encode else ""))
    lo, hi, best = 1, longest // tc, shortest  # in units of tc: lo fits; find the largest that does
    while lo < hi:
        mid = (lo + hi + 1) // 2
        e = estimate(mid * tc)
        if e <= budget:
            lo, best = mid, e
        else:
            hi = mid - 1
    return ChunkChoice(lo * tc, best, budget)
