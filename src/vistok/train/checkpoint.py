"""Training checkpoints: written atomically, read without running pickled code.

A checkpoint holds everything needed to continue a run exactly: model, EMA, optimizers, LR
schedulers, discriminator, step, and every RNG state. It is written to a temporary file in the
same folder and renamed over the old one, so a run killed mid-write leaves the previous checkpoint
intact. It is read back with ``torch.load(weights_only=True)``: tensors and plain containers only.
"""

from __future__ import annotations

import random
import shutil
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


# -- sharded checkpoints (FSDP2) -------------------------------------------------------------------
#
# Under FSDP2 no rank holds the whole model, and gathering it on one rank to save would need the
# memory sharding exists to avoid. Every rank then writes its own shards of every DTensor (model,
# EMA, optimizer moments, discriminator) with torch.distributed.checkpoint into a folder named by
# the step, ``checkpoint-shards-<step>``; the main rank writes ``checkpoint.pt`` as always, with
# each sharded tensor replaced by a marker naming its key there. ``checkpoint.pt`` is replaced only
# after its folder is complete, and older folders are removed only after that, so a run killed at
# any point leaves a checkpoint and the folder it names.

SHARDS_PREFIX = "checkpoint-shards-"
_MARK = "__sharded__"


def _split_sharded(state: Any, path: str, shards: dict) -> Any:
    from vistok.train.distributed import is_dtensor

    if isinstance(state, dict):
        return {k: _split_sharded(v, f"{path}/{k}", shards) for k, v in state.items()}
    if isinstance(state, list):
        return [_split_sharded(v, f"{path}/{i}", shards) for i, v in enumerate(state)]
    if is_dtensor(state):
        if any(not (p.is_shard() and p.dim == 0) for p in state.placements):
            raise VistokError(f"cannot checkpoint {path}: only FSDP2's dim-0 shards are supported, not {state.placements}")
        shards[path] = state
        return {_MARK: path, "shape": list(state.shape), "dtype": str(state.dtype).removeprefix("torch.")}
    return state


def _join_sharded(state: Any, make, targets: dict) -> Any:
    """``state`` with each marker replaced by ``make(marker)``, also kept in ``targets`` by key."""
    if isinstance(state, dict):
        if _MARK in state:
            targets[state[_MARK]] = make(state)
            return targets[state[_MARK]]
        return {k: _join_sharded(v, make, targets) for k, v in state.items()}
    if isinstance(state, list):
        return [_join_sharded(v, make, targets) for v in state]
    return state


def save_sharded_checkpoint(path: Path, state: dict[str, Any], info) -> Path:
    """Every rank calls this with its own ``state`` (DTensor shards where sharded): the shards go to
    ``checkpoint-shards-<step>`` beside ``path``, the rest to ``path`` from the main rank."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    path = Path(path)
    shards: dict[str, torch.Tensor] = {}
    skeleton = _split_sharded(state, "", shards)
    folder = path.parent / f"{SHARDS_PREFIX}{int(state['step']):08d}"
    partial = folder.with_name(folder.name + ".partial")
    if info.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_tree(partial)
    dist.barrier()
    dcp.save(shards, checkpoint_id=str(partial))
    dist.barrier()
    if info.is_main:
        _remove_tree(folder)
        partial.rename(folder)
        skeleton["shards"] = folder.name
        save_checkpoint(path, skeleton)
        for old in path.parent.glob(f"{SHARDS_PREFIX}*"):
            if old.name != folder.name:
                _remove_tree(old)
    dist.barrier()
    return path


def load_sharded_state(state: dict[str, Any], folder: Path, like: torch.Tensor) -> dict[str, Any]:
    """``state`` (read from ``checkpoint.pt``) with each marker replaced by this rank's shards of
    that tensor from ``folder``, sharded as ``like`` (a parameter of the running FSDP2 model) is.
    Every rank calls this."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.tensor import empty as dtensor_empty

    if not folder.is_dir():
        raise VistokError(f"cannot resume: the checkpoint's shards folder {folder} is missing")
    def make(m: dict) -> torch.Tensor:
        return dtensor_empty(*m["shape"], dtype=getattr(torch, m["dtype"]), device_mesh=like.device_mesh,
                             placements=like.placements)

    targets: dict[str, torch.Tensor] = {}
    joined = _join_sharded(state, make, targets)
    try:
        dcp.load(targets, checkpoint_id=str(folder))  # fills the targets in place
    except Exception as e:  # a foreign, truncated or differently shaped folder
        raise VistokError(f"cannot read the checkpoint shards in {folder}: {str(e).splitlines()[0]}") from None
    return joined


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
