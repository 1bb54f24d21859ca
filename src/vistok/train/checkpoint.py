"""Training checkpoints: written atomically, read without running pickled code.

A checkpoint holds everything needed to continue a run exactly: model, EMA, optimizers, LR
schedulers, discriminator, step, and every RNG state. It is written to a temporary file in the
same folder and renamed over the old one, so a run killed mid-write leaves the previous checkpoint
intact. It is read back with ``torch.load(weights_only=True)``: tensors and plain containers only.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vistok.atomic import atomic_output
from vistok.errors import VistokError

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": list(random.getstate()[1]) + [random.getstate()[2] if random.getstate()[2] is not None else -1],
        "python_version": random.getstate()[0],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    gauss = py[-1]
    random.setstate((state["python_version"], tuple(py[:-1]), None if gauss == -1 else gauss))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:  # a kill or a full disk mid-write leaves the previous one intact
        with open(tmp, "wb") as f:
            try:
                torch.save(state, f)
            except RuntimeError as e:
                # torch's zip writer reports a failed write of ours as "unexpected pos"; the file
                # system's own error (a full disk) is its context: raise that, which names the cause.
                if isinstance(e.__context__, OSError):
                    raise e.__context__ from None
                raise
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise VistokError(f"no checkpoint at {path} to resume from")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file
        raise VistokError(f"cannot read checkpoint {path}: {e}") from None


def save_checkpoint_on_main(path: Path, state_fn, info) -> None:
    """Every rank calls this: the main rank writes ``state_fn()`` atomically, then all ranks meet
    at a barrier so none runs ahead of a checkpoint that is still being written."""
    if info.is_main:
        save_checkpoint(path, state_fn())
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()
