"""Seeds that are functions of ``(seed, ...)``, so every random choice of a run can be made again.

A trainer draws its item order from a per-epoch permutation seeded by ``(seed, epoch)`` and the
random choices of one step (masks, class dropout) from a generator seeded by ``(seed, step, rank)``;
a run resumed at any step then makes the choices an uninterrupted run would have made.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a hash of ``keys`` (non-negative integers)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of epoch ``epoch``'s item order (the same on every rank)."""
    return derive_seed(seed, 0, epoch)


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the random choices of one step on one rank."""
    return derive_seed(seed, 1, step, rank)
