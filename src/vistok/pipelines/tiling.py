"""Spatial tiling: frames too large for the memory budget go through the tokenizer in overlapping
tiles and are blended back.

Each tile streams through time on its own: it has its own copy of the tokenizer's modules (the
weights are shared, not copied), so its causal caches carry from chunk to chunk exactly as a whole
frame's do. The decoded tiles are blended with linear ramps across each overlap: the weights of the
tiles covering a pixel sum to one there, and a pixel covered by one tile takes that tile's value.

Tiles are not exact. Per-frame group normalization takes each tile's own statistics, and
convolutions near a tile's edge see zero padding where the whole frame has pixels, so a tiled
reconstruction differs from the whole-frame one, mostly near the seams. ``bench/tiling_seams.py``
measures how much, against the whole frame and against the original.
"""

from __future__ import annotations

import copy
import itertools
from collections import deque
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from vistok.errors import VistokError
from vistok.tokenizers.base import Tokenizer


def tile_windows(length: int, tile: int, overlap: int, multiple: int) -> list[tuple[int, int]]:
    """``[start, stop)`` windows of ``tile`` pixels covering ``[0, length)``, neighbours sharing at
    least ``overlap`` pixels, every start a multiple of ``multiple`` (the tokenizer's spatial
    factor). One window when ``tile >= length``; the last window ends at ``length``."""
    if tile % multiple or overlap % multiple or length % multiple:
        raise VistokError(f"--tile and --tile-overlap must be multiples of {multiple} (the model's spatial factor)")
    if tile >= length:
        return [(0, length)]
    if not 0 <= overlap < tile:
        raise VistokError(f"--tile-overlap must be at least 0 and less than --tile ({tile}); got {overlap}")
    step = tile - overlap
    starts = list(range(0, length - tile, step)) + [length - tile]
    return [(s, s + tile) for s in dict.fromkeys(starts)]


def blend_weights(windows: list[tuple[int, int]], length: int) -> list[Tensor]:
    """1-D weight of each window over its own pixels: 1 where no other window reaches, a linear
    ramp across each overlap with a neighbour (rising into the window, falling out of it); the
    weights of all windows covering a pixel sum to one."""
    ramps = []
    for i, (a, b) in enumerate(windows):
        w = torch.ones(b - a, dtype=torch.float64)
        x = torch.arange(a, b, dtype=torch.float64) + 0.5
        if i > 0 and windows[i - 1][1] > a:  # overlap with the previous window: rise across it
            ov = windows[i - 1][1] - a
            w = torch.minimum(w, (x - a) / ov)
        if i + 1 < len(windows) and windows[i + 1][0] < b:  # overlap with the next: fall across it
            ov = b - windows[i + 1][0]
            w = torch.minimum(w, (b - x) / ov)
        ramps.append(w)
    total = torch.zeros(length, dtype=torch.float64)
    for (a, b), w in zip(windows, ramps):
        total[a:b] += w
    return [(w / total[a:b]).float() for (a, b), w in zip(windows, ramps)]


class TiledReconstruction:
    """Stream a clip through ``tok`` in tiles of ``tile`` pixels (square) overlapping by
    ``overlap``: :meth:`run` takes the clip's chunks ``(1 c t H W)`` as :meth:`Tokenizer.encode_stream`
    does and yields ``(x_hat, token_pieces)`` per chunk, ``x_hat`` the blended ``(1 c t H W)``
    reconstruction and ``token_pieces`` each tile's indices (or codes, for a continuous bottleneck).
    With one tile (``tile`` at least the frame) this is the whole-frame stream itself, no copy, no
    blend."""

    def __init__(self, tok: Tokenizer, height: int, width: int, tile: int | None = None, overlap: int = 0):
        sc = tok.spatial_compression
        self.tok = tok
        ys = tile_windows(height, tile or height, overlap, sc)
        xs = tile_windows(width, tile or width, overlap, sc)
        self.windows = list(itertools.product(ys, xs))
        wy, wx = blend_weights(ys, height), blend_weights(xs, width)
        self.weights = [wy[i][:, None] * wx[j][None, :] for i, j in itertools.product(range(len(ys)), range(len(xs)))]
        self.tile_size = (ys[0][1] - ys[0][0], xs[0][1] - xs[0][0])

    def __len__(self) -> int:
        return len(self.windows)

    def _copies(self) -> list[Tokenizer]:
        if len(self.windows) == 1:
            return [self.tok]
        shared = {id(t): t for t in itertools.chain(self.tok.parameters(), self.tok.buffers())}
        return [copy.deepcopy(self.tok, memo=dict(shared)) for _ in self.windows]

    @torch.no_grad()
    def run(self, chunks: Iterable[Tensor]) -> Iterator[tuple[Tensor, list[Tensor]]]:
        continuous = self.tok.vocab_size is None
        queues: list[deque] = [deque() for _ in self.windows]
        pieces: list[deque] = [deque() for _ in self.windows]

        def feed(q: deque):
            while q:  # each pull finds the crop put there just before it
                yield q.popleft()

        def keep(stream, out: deque):
            for piece in stream:
                out.append(piece[0, 0] if continuous else piece[0])
                yield piece

        streams = []
        for tok, q, out in zip(self._copies(), queues, pieces):
            enc = tok.encode_codes_stream(feed(q)) if continuous else tok.encode_stream(feed(q))
            streams.append(tok.decode_codes_stream(keep(enc, out)) if continuous else tok.decode_stream(keep(enc, out)))
        try:
            for chunk in chunks:
                if len(self.windows) == 1:
                    queues[0].append(chunk)
                    yield next(streams[0]), [pieces[0].popleft()]
                    continue
                x_hat = None
                for ((y0, y1), (x0, x1)), weight, q, stream in zip(self.windows, self.weights, queues, streams):
                    q.append(chunk[..., y0:y1, x0:x1])
                    part = next(stream)
                    if x_hat is None:
                        x_hat = torch.zeros(*part.shape[:3], chunk.shape[-2], chunk.shape[-1], dtype=part.dtype)
                    x_hat[..., y0:y1, x0:x1] += part * weight.to(part.dtype)
                    del part
                yield x_hat, [p.popleft() for p in pieces]
        finally:
            for stream in streams:
                stream.close()
