"""Launch a test worker on two gloo ranks under ``torch.distributed.run``.

The standalone rendezvous picks a free port that another process can take before the workers
bind it (seen in full-suite runs on a loaded machine), so a failed launch is retried once in a
fresh folder; a real failure fails both attempts."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def run_two_ranks(worker: Path, make_args: Callable[[Path], list], base: Path, timeout: int = 240) -> Path:
    """Run ``worker`` with ``make_args(out_dir)``; returns the ``out_dir`` of the launch that succeeded."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    failures = []
    for attempt in (1, 2):
        out = base / f"attempt{attempt}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(worker), *map(str, make_args(out))]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0:
            return out
        failures.append(proc.stdout[-3000:] + proc.stderr[-3000:])
        print(f"torchrun attempt {attempt} failed:\n{failures[-1][-2000:]}")
    raise AssertionError("torch.distributed.run failed twice:\n" + failures[-1])
