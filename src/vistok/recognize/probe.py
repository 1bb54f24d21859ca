"""Linear probes: a frozen network's features with a multinomial logistic regression on top.

The external baseline of the motion table is Kinetics-400 I3D (:mod:`vistok.metrics.i3d`, the
network that defines FVD) read by a linear classifier, the usual way a frozen video network is
compared with trained ones. :func:`i3d_clip_features` embeds a :class:`RecognitionSet`'s clips
with :meth:`I3D.pooled_features` (1024 values per clip, frames resized to 224 x 224 as for FVD);
:func:`fit_linear_probe` fits the classifier exactly (L-BFGS in float64 to a vanishing gradient of
a strictly convex objective: mean cross-entropy plus ``weight_decay / 2 * |W|^2`` on standardized
features); :func:`choose_weight_decay` picks the penalty by stratified k-fold cross-validation on
the training labels only, so the test set chooses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vistok.errors import VistokError
from vistok.metrics.i3d import FVD_SIZE, I3D, fvd_preprocess
from vistok.recognize.data import RecognitionSet

I3D_MIN_FRAMES = 9
WEIGHT_DECAYS = (1e-3, 1e-2, 1e-1, 1.0)


def i3d_clip_features(i3d: I3D, data: RecognitionSet, *, size: int = FVD_SIZE, batch_size: int = 8,
                      progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """``(n, 1024)`` float32 I3D features of every clip of ``data`` (frames resized to ``size``)."""
    if data.frames < I3D_MIN_FRAMES:
        raise VistokError(f"I3D features need clips of at least {I3D_MIN_FRAMES} frames; the set has {data.frames}")
    out = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            items = torch.arange(start, min(start + batch_size, len(data)))
            out.append(i3d.pooled_features(fvd_preprocess(data.video(items), size=size)).float())
            if progress is not None:
                progress(len(items))
    return torch.cat(out) if out else torch.zeros(0, i3d.logits.in_channels)


@dataclass
class LinearProbe:
    """``softmax(((x - mean) / std) @ weight + bias)``; ``weight (d, classes)``."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    weight_decay: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.mean) / self.std) @ self.weight + self.bias

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted class and its probability per row."""
        conf, pred = self.logits(x).softmax(-1).max(-1)
        return pred, conf.float()


def probe_objective(weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
                    weight_decay: float) -> torch.Tensor:
    """Mean cross-entropy of ``z @ weight + bias`` plus ``weight_decay / 2 * |weight|^2``."""
    return F.cross_entropy(z @ weight + bias, y) + 0.5 * weight_decay * weight.pow(2).sum()


def fit_linear_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int, weight_decay: float, *,
                     max_iter: int = 1000, tolerance: float = 1e-7) -> LinearProbe:
    """The minimiser of :func:`probe_objective` on standardized ``x`` (float64 L-BFGS)."""
    if x.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise VistokError(f"a linear probe needs features (n, d) and n labels; got {tuple(x.shape)} and {len(y)}")
    if weight_decay <= 0:
        raise VistokError(f"weight_decay must be positive (it makes the probe unique); got {weight_decay}")
    x = x.double()
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-6)
    z = (x - mean) / std
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=tolerance,
                            tolerance_change=1e-14, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = probe_objective(weight, bias, z, y, weight_decay)
        loss.backward()
        return loss

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: threads only add barriers (and stall on a busy machine)
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(threads)
    return LinearProbe(mean, std, weight.detach(), bias.detach(), weight_decay)


def stratified_folds(y: torch.Tensor, folds: int, seed: int) -> list[torch.Tensor]:
    """Indices of ``folds`` validation folds; each class is dealt round-robin after a seeded shuffle."""
    g = torch.Generator().manual_seed(seed)
    out: list[list[int]] = [[] for _ in range(folds)]
    for c in torch.unique(y).tolist():
        members = torch.nonzero(y == c).flatten()
        for i, item in enumerate(members[torch.randperm(len(members), generator=g)].tolist()):
            out[i % folds].append(item)
    return [torch.tensor(sorted(f), dtype=torch.long) for f in out if f]


def choose_weight_decay(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, grid: Sequence[float] = WEIGHT_DECAYS,
                        folds: int = 3, seed: int = 0) -> float:
    """The penalty of ``grid`` with the best stratified k-fold validation accuracy on ``(x, y)``
    (ties: the lower validation cross-entropy). Folds shrink to the smallest class's size (at least 2)."""
    smallest = int(torch.bincount(y).clamp_min(1)[torch.unique(y)].min())
    folds = max(2, min(folds, smallest))
    parts = stratified_folds(y, folds, seed)
    best: tuple[float, float, float] | None = None
    for wd in grid:
        correct, ce = 0, 0.0
        for val in parts:
            keep = torch.ones(len(y), dtype=torch.bool)
            keep[val] = False
            p = fit_linear_probe(x[keep], y[keep], num_classes, wd)
            logits = p.logits(x[val])
            correct += int((logits.argmax(-1) == y[val]).sum())
            ce += float(F.cross_entropy(logits, y[val], reduction="sum"))
        key = (-correct, ce, wd)
        if best is None or key < best:
            best = key
    assert best is not None
    return best[2]
