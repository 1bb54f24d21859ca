"""Entropy models for LFQ tokens, coded with ``constriction``'s range coder.

A K-bit LFQ token is K binary decisions, one per latent channel (``index = sum_d bit_d 2^d``,
MAGVIT-v2 section 3.1), so both models code *bit planes*: ``planes[t, j, y, x]`` is bit
``kept_channels[j]`` of the token at ``(t, y, x)``. The coding order inside a chunk is frame by
frame, and plane by plane within a frame.

* :class:`StaticBitModel` -- one probability per bit plane, fitted to the chunk and sent as side
  information (one byte per plane). It is the factorized baseline: a well-trained LFQ spreads
  its usage over the vocabulary (the entropy penalty), so each bit is close to a fair coin and
  this model codes close to K bits per token.
* :class:`ContextBitModel` -- adaptive binary models conditioned on already-decoded neighbours
  of the same bit: in the previous latent frame (its value there, how many of its 8 neighbours
  are set, and whether the token there has matched this one on every bit coded so far) and in the
  current plane. A plane is coded in three polyphase passes, a finer version
  of the checkerboard of He et al. 2021 ("Checkerboard context model for efficient learned image
  compression"): the (even, even) positions, which see only the previous frame; the (odd, odd)
  ones, which also see their 4 diagonal neighbours; then the rest, which see their 4 decoded
  horizontal and vertical neighbours. Three quarters of the bits get a spatial context, and each
  pass is one vectorized call to the range coder (``3 K`` calls per latent frame, not one per bit).
  The contexts are shared by all bit planes.

Exactness. Probabilities are integers: 16-bit ``q = P(bit = 1) * 2^16`` computed from integer
counts with integer arithmetic (Krichevsky-Trofimov ``(n1 + 1/2) / (n + 1)``), handed to the coder
as the exactly representable float ``q / 2^16``. Encoder and decoder therefore build bit-identical
models on any machine, and ``decode(encode(x)) == x`` holds with no floating-point drift.

Robustness. Decoding is fed bytes that may be hostile: every coder error becomes
:class:`~vistok.codec.container.VistokFormatError`, and decoding stops as soon as the symbols
decoded so far carry more information (``-log2 p``) than the payload holds bits, so a tiny payload
can never make the decoder grind through millions of symbols.
"""

from __future__ import annotations

from dataclasses import dataclass

import constriction
import numpy as np

from vistok.codec.container import CODER_CONTEXT, CODER_IDS, CODER_STATIC, VistokFormatError
from vistok.errors import VistokError

PROB_BITS = 16
PROB_ONE = 1 << PROB_BITS

# Static model: probabilities in 1/256 steps, kept away from 0 and 1 so an unseen value still codes.
STATIC_LEVELS = 256

# Context model. Counts are halved once a context has seen COUNT_LIMIT symbols, so old statistics
# fade (the scene changes) and the largest confidence stays ~1 - 1/(2 COUNT_LIMIT), which also
# bounds the cost of a surprise to ~11 bits.
COUNT_LIMIT = 1024
# no previous frame | (centre bit 0/1) x (8-neighbour ones: few / some / most) x (token same so far)
TEMPORAL_STATES = 13
SPATIAL_STATES = 6  # no decoded neighbour (first pass) | neighbour ones fraction in quarters (0..4)
# One set of contexts shared by every bit plane: a trained LFQ's channels are exchangeable (the
# entropy penalty makes each nearly a fair coin), and per-plane counts would learn K times slower,
# which costs more than they gain on clips of a few thousand tokens (measured on the default
# model's tokens: 1.1-1.8x the rate).
LOCAL_CONTEXTS = TEMPORAL_STATES * SPATIAL_STATES

# Decoding gives up once the information decoded exceeds the payload by this much: a valid range
# coder output is never shorter than the information it holds (up to its final flush).
_COST_SLACK_BITS = 64.0
_COST_SLACK_FRACTION = 0.01


@dataclass(frozen=True)
class CodedChunk:
    """One chunk's coded bit planes.

    Attributes:
        side: model side information stored with the chunk (static model: one byte per plane).
        payload: the range coder's output, whole 32-bit words, little-endian.
        info_bits: the model's own estimate of the payload size, ``sum -log2 p(bit)`` over every
            coded bit with the exact probabilities the coder used (the "estimated entropy").
        symbols: number of binary symbols coded.
    """

    side: bytes
    payload: bytes
    info_bits: float
    symbols: int

    @property
    def payload_bits(self) -> int:
        return 8 * len(self.payload)


def _bernoulli():
    # perfect=False: constriction's fast, still deterministic, quantization of p; our p are
    # multiples of 2^-16 and so already exact at its 24-bit precision.
    return constriction.stream.model.Bernoulli(perfect=False)


def _info(bits: np.ndarray, q: np.ndarray) -> float:
    """``sum -log2 p(bit)`` for bits coded with ``P(1) = q / 2^16``."""
    p = np.where(bits.astype(bool), q, PROB_ONE - q).astype(np.float64) / PROB_ONE
    return float(-np.log2(p).sum())


class _Encoder:
    def __init__(self):
        self.coder = constriction.stream.queue.RangeEncoder()
        self.info_bits = 0.0
        self.symbols = 0

    def encode(self, bits: np.ndarray, q: np.ndarray) -> None:
        bits = np.ascontiguousarray(bits, dtype=np.int32).reshape(-1)
        q = np.broadcast_to(np.asarray(q, dtype=np.int64), bits.shape)
        if bits.size:
            self.coder.encode(bits, _bernoulli(), q.astype(np.float64) / PROB_ONE)
            self.info_bits += _info(bits, q)
            self.symbols += bits.size

    def finish(self, side: bytes = b"") -> CodedChunk:
        words = self.coder.get_compressed().astype("<u4", copy=False)
        return CodedChunk(side, words.tobytes(), self.info_bits, self.symbols)


class _Decoder:
    """A range decoder over untrusted bytes: errors and over-long decodes become format errors."""

    def __init__(self, payload: bytes):
        if len(payload) % 4:
            raise VistokFormatError("damaged .vtok chunk: payload is not whole 32-bit words")
        self.payload_bits = 8 * len(payload)
        words = np.frombuffer(payload, dtype="<u4").astype(np.uint32)
        try:
            self.coder = constriction.stream.queue.RangeDecoder(words)
        except Exception as e:  # constriction reports bad input with assorted exception types
            raise VistokFormatError(f"damaged .vtok chunk: {e}") from None
        self.info_bits = 0.0

    def decode(self, q: np.ndarray, n: int) -> np.ndarray:
        q = np.broadcast_to(np.asarray(q, dtype=np.int64), (n,))
        if n == 0:
            return np.zeros(0, dtype=np.uint8)
        try:
            bits = self.coder.decode(_bernoulli(), q.astype(np.float64) / PROB_ONE)
        except Exception as e:
            raise VistokFormatError(f"damaged .vtok chunk: the entropy decoder failed ({e})") from None
        bits = np.asarray(bits).astype(np.uint8)
        self.info_bits += _info(bits, q)
        if self.info_bits > self.payload_bits * (1 + _COST_SLACK_FRACTION) + _COST_SLACK_BITS:
            raise VistokFormatError(
                f"damaged .vtok chunk: its tokens would need {self.info_bits:.0f} bits but the chunk holds "
                f"{self.payload_bits}"
            )
        return bits

    def finish(self) -> None:
        # A valid payload is consumed exactly; extra words mean a spliced or forged chunk.
        if not self.coder.maybe_exhausted():
            raise VistokFormatError("damaged .vtok chunk: payload continues after the last token")


# -- static model ---------------------------------------------------------------------------------


class StaticBitModel:
    """One Bernoulli per bit plane, fitted to each chunk; its probabilities (8 bits each) are the
    chunk's side information."""

    coder_id = CODER_STATIC
    name = "static"

    @staticmethod
    def side_bytes(n_planes: int) -> int:
        return n_planes

    def fit(self, planes: np.ndarray) -> np.ndarray:
        """``(t, n, h, w)`` bits -> ``(n,)`` levels ``round(256 P(1))`` clamped to ``[1, 255]``."""
        n = planes.shape[1]
        ones = planes.transpose(1, 0, 2, 3).reshape(n, -1).sum(axis=1, dtype=np.int64)
        total = max(planes.size // max(n, 1), 1)
        level = (2 * STATIC_LEVELS * ones + total) // (2 * total)  # rounded, in integers
        return np.clip(level, 1, STATIC_LEVELS - 1)

    @staticmethod
    def _q(levels: np.ndarray) -> np.ndarray:
        return levels.astype(np.int64) * (PROB_ONE // STATIC_LEVELS)

    def encode(self, planes: np.ndarray) -> CodedChunk:
        """Code ``(t, n, h, w)`` uint8 bits."""
        t, n, h, w = planes.shape
        levels = self.fit(planes)
        q = np.repeat(self._q(levels), h * w)  # (n h w): one frame's probabilities
        enc = _Encoder()
        for i in range(t):
            enc.encode(planes[i].reshape(-1), q)
        return enc.finish(levels.astype(np.uint8).tobytes())

    def decode(self, side: bytes, payload: bytes, shape: tuple[int, int, int, int]) -> np.ndarray:
        t, n, h, w = shape
        levels = np.frombuffer(side, dtype=np.uint8)
        if levels.size != n or levels.min(initial=1) < 1:
            raise VistokFormatError("damaged .vtok chunk: invalid static-model probabilities")
        q = np.repeat(self._q(levels), h * w)
        dec = _Decoder(payload)
        planes = np.empty(shape, dtype=np.uint8)
        for i in range(t):
            planes[i] = dec.decode(q, n * h * w).reshape(n, h, w)
        dec.finish()
        return planes


# -- context model --------------------------------------------------------------------------------


def _shifted_sum(padded: np.ndarray, offsets, h: int, w: int) -> np.ndarray:
    """Sum of a zero-padded (by 1) ``(h+2, w+2)`` array over neighbour ``offsets``."""
    out = np.zeros((h, w), dtype=np.int32)
    for dy, dx in offsets:
        out += padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return out


_RING = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
_CROSS = [(-1, 0), (1, 0), (0, -1), (0, 1)]
_DIAGONAL = [(-1, -1), (-1, 1), (1, -1), (1, 1)]
# The three passes over a plane and the neighbours each one reads: its 4 diagonal neighbours are
# all (even, even) positions for an (odd, odd) one; its 4 cross neighbours are all decoded by then
# for the rest.
_PASS_NEIGHBOURS = (None, _DIAGONAL, _CROSS)


class _ContextState:
    """Adaptive counts and context computation for one chunk on an ``h x w`` grid.

    Only integer arithmetic: the contexts and the probabilities derived from the counts are the
    same on every machine.
    """

    def __init__(self, h: int, w: int):
        self.h, self.w = h, w
        self.counts = np.zeros((LOCAL_CONTEXTS, 2), dtype=np.int64)
        yy, xx = np.mgrid[0:h, 0:w]
        even = (yy % 2 == 0) & (xx % 2 == 0)
        odd = (yy % 2 == 1) & (xx % 2 == 1)
        self.passes = (even, odd, ~(even | odd))
        ones = np.pad(np.ones((h, w), dtype=np.int32), 1)
        self.ring_valid = _shifted_sum(ones, _RING, h, w)

    def temporal(self, prev: np.ndarray | None, same_so_far: np.ndarray) -> np.ndarray:
        """Per position: 0 without a previous frame, else ``1 + level + 3 centre + 6 same``, read
        from the same plane of the previous latent frame: ``centre`` its bit at this position,
        ``level`` whether few (<= 1/4), some or most (>= 3/4) of its 8 neighbours are set, ``same``
        whether the previous frame's token here agreed on every plane coded so far in this frame
        (a static region repeats whole tokens, and then this bit almost surely repeats too)."""
        if prev is None:
            return np.zeros((self.h, self.w), dtype=np.int64)
        ring = _shifted_sum(np.pad(prev.astype(np.int32), 1), _RING, self.h, self.w)
        nv = self.ring_valid
        level = np.where(4 * ring <= nv, 0, np.where(4 * ring >= 3 * nv, 2, 1))
        return 1 + level + 3 * prev.astype(np.int64) + 6 * same_so_far.astype(np.int64)

    def contexts(self, temporal: np.ndarray, cur: np.ndarray, decoded: np.ndarray, k: int) -> np.ndarray:
        """Context ids of pass ``k``'s positions, in raster order. ``cur`` is the plane being coded,
        of which only the ``decoded`` positions (earlier passes) are read."""
        h, w = self.h, self.w
        if _PASS_NEIGHBOURS[k] is None:
            spatial = np.zeros((h, w), dtype=np.int64)
        else:
            offsets = _PASS_NEIGHBOURS[k]
            s = _shifted_sum(np.pad((cur & decoded).astype(np.int32), 1), offsets, h, w)
            v = _shifted_sum(np.pad(decoded.astype(np.int32), 1), offsets, h, w)
            # 0: no decoded neighbour (grid border); else 1 + the ones fraction rounded to quarters
            spatial = np.where(v == 0, 0, 1 + (4 * s + v // 2) // np.maximum(v, 1))
        return (temporal + TEMPORAL_STATES * spatial)[self.passes[k]]

    def probabilities(self, ctx: np.ndarray) -> np.ndarray:
        """``q = 2^16 (n1 + 1/2) / (n + 1)`` (Krichevsky-Trofimov), integer-exact."""
        n0, n1 = self.counts[ctx, 0], self.counts[ctx, 1]
        q = ((2 * n1 + 1) << PROB_BITS) // (2 * (n0 + n1) + 2)
        return np.clip(q, 1, PROB_ONE - 1)

    def update(self, ctx: np.ndarray, bits: np.ndarray) -> None:
        # The whole pass updates at once (the coder saw the pass with the counts from before it).
        self.counts += np.bincount(ctx * 2 + bits, minlength=self.counts.size).reshape(-1, 2)
        # Halve until every context is back under the limit (one pass can add many symbols).
        full = self.counts.sum(axis=1) > COUNT_LIMIT
        while full.any():
            self.counts[full] = (self.counts[full] + 1) >> 1
            full = self.counts.sum(axis=1) > COUNT_LIMIT


class ContextBitModel:
    """Adaptive binary models conditioned on the previous frame and the decoded spatial neighbours
    of the same bit (see the module docstring). No side information; the counts restart at every
    chunk, so a chunk decodes on its own."""

    coder_id = CODER_CONTEXT
    name = "context"

    @staticmethod
    def side_bytes(n_planes: int) -> int:
        return 0

    def encode(self, planes: np.ndarray) -> CodedChunk:
        t, n, h, w = planes.shape
        state, enc = _ContextState(h, w), _Encoder()
        for i in range(t):
            same = np.ones((h, w), dtype=bool)
            for j in range(n):
                prev = planes[i - 1, j] if i else None
                temporal = state.temporal(prev, same)
                cur, decoded = planes[i, j].astype(bool), np.zeros((h, w), dtype=bool)
                for k, mask in enumerate(state.passes):
                    ctx = state.contexts(temporal, cur, decoded, k)
                    bits = cur[mask].astype(np.int64)
                    enc.encode(bits, state.probabilities(ctx))
                    state.update(ctx, bits)
                    decoded |= mask
                if prev is not None:
                    same &= cur == prev.astype(bool)
        return enc.finish()

    def decode(self, side: bytes, payload: bytes, shape: tuple[int, int, int, int]) -> np.ndarray:
        t, n, h, w = shape
        if side:
            raise VistokFormatError("damaged .vtok chunk: the context model has no side information")
        state, dec = _ContextState(h, w), _Decoder(payload)
        planes = np.zeros(shape, dtype=np.uint8)
        for i in range(t):
            same = np.ones((h, w), dtype=bool)
            for j in range(n):
                prev = planes[i - 1, j] if i else None
                temporal = state.temporal(prev, same)
                cur, decoded = np.zeros((h, w), dtype=bool), np.zeros((h, w), dtype=bool)
                for k, mask in enumerate(state.passes):
                    ctx = state.contexts(temporal, cur, decoded, k)
                    bits = dec.decode(state.probabilities(ctx), ctx.size)
                    cur[mask] = bits.astype(bool)
                    state.update(ctx, bits.astype(np.int64))
                    decoded |= mask
                planes[i, j] = cur
                if prev is not None:
                    same &= cur == prev.astype(bool)
        dec.finish()
        return planes


MODELS = {CODER_STATIC: StaticBitModel, CODER_CONTEXT: ContextBitModel}


def get_model(coder: int | str):
    """The entropy model for a header's coder id, or by name (``"static"``, ``"context"``)."""
    if isinstance(coder, str):
        if coder not in CODER_IDS:
            raise VistokError(f"unknown entropy model {coder!r}; choose from {sorted(CODER_IDS)}")
        coder = CODER_IDS[coder]
    return MODELS[coder]()


# -- helpers shared with the codec ----------------------------------------------------------------


def to_planes(indices: np.ndarray, channels: list[int]) -> np.ndarray:
    """``(t h w)`` int tokens -> ``(t n h w)`` uint8 bits of the given channels."""
    idx = np.asarray(indices, dtype=np.int64)
    shifts = np.asarray(channels, dtype=np.int64).reshape(1, -1, 1, 1)
    return ((idx[:, None] >> shifts) & 1).astype(np.uint8)


def from_planes(planes: np.ndarray, channels: list[int]) -> np.ndarray:
    """``(t n h w)`` bits -> ``(t h w)`` int64 tokens (channels not listed are 0)."""
    t, _, h, w = planes.shape
    out = np.zeros((t, h, w), dtype=np.int64)
    for j, d in enumerate(channels):
        out |= planes[:, j].astype(np.int64) << d
    return out
