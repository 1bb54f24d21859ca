"""The masking schedule, one module for training and sampling (MaskGIT, section 3.2).

``mask_ratio(r)`` maps the progress ``r`` in [0, 1] to the fraction of tokens that are masked: 1 at
``r = 0`` (everything masked), 0 at ``r = 1``, non-increasing in between.

* Training draws ``r ~ U(0, 1)`` per sample and masks ``ceil(mask_ratio(r) * n)`` of its ``n``
  maskable tokens, at least one (:func:`num_masked_for_training`).
* Sampling with ``S`` steps leaves ``floor(mask_ratio((s + 1) / S) * n)`` of the ``n`` generated
  tokens masked after step ``s`` (:func:`num_masked_after_step`), so the last step reveals all.

Using the same function for both means the model is trained on the mask ratios it meets when
decoding. MaskGIT finds the concave cosine schedule best (its Figure 8); linear and square are the
alternatives it compares.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vistok.errors import VistokError


def _cosine(r: Tensor) -> Tensor:
    return torch.cos(r * (math.pi / 2))


def _linear(r: Tensor) -> Tensor:
    return 1.0 - r


def _square(r: Tensor) -> Tensor:
    return 1.0 - r * r


SCHEDULES = {"cosine": _cosine, "linear": _linear, "square": _square}


def check_schedule(name: str) -> str:
    if name not in SCHEDULES:
        raise VistokError(f"unknown masking schedule {name!r}; choose from {sorted(SCHEDULES)}")
    return name


def mask_ratio(r: Tensor | float, schedule: str = "cosine") -> Tensor:
    """Fraction of tokens masked at progress ``r`` (a float or a tensor of any shape, in [0, 1])."""
    fn = SCHEDULES[check_schedule(schedule)]
    r = torch.as_tensor(r, dtype=torch.float64).clamp(0.0, 1.0)
    # cos(pi/2) is 6e-17, not 0: clamp so that r = 1 reveals every token.
    return fn(r).clamp(0.0, 1.0).masked_fill(r >= 1.0, 0.0)


def num_masked_for_training(r: Tensor, n: Tensor | int, schedule: str = "cosine") -> Tensor:
    """``(b,)`` progress draws and maskable-token counts -> ``(b,)`` int64 counts in ``[1, n]``."""
    n = torch.as_tensor(n, dtype=torch.int64, device=r.device)
    k = torch.ceil(mask_ratio(r, schedule).to(r.device) * n).to(torch.int64)
    return torch.minimum(k.clamp_min(1), n)


def num_masked_after_step(step: int, steps: int, n: Tensor, schedule: str = "cosine") -> Tensor:
    """How many of the ``n`` (a ``(b,)`` int64 tensor) generated tokens stay masked after step
    ``step`` (0-based) of ``steps``; 0 after the last step."""
    if steps < 1 or not 0 <= step < steps:
        raise VistokError(f"step {step} is outside [0, {steps})")
    ratio = mask_ratio((step + 1) / steps, schedule).item()
    return torch.floor(ratio * n.to(torch.float64)).to(torch.int64)
