"""Metrics to a JSONL file (one object per logged step) and a console progress bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from vistok.atomic import atomic_write_text, write_failure


class MetricsLog:
    """Appends ``{"step": ..., **metrics}`` lines; on resume, lines past the resumed step are dropped
    so the file reads as one uninterrupted run."""

    def __init__(self, path: str | Path, *, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        elif self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))  # a kill here loses no rows

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": step, "time": round(time.time(), 3)}
        for k, v in metrics.items():
            v = float(v) if not isinstance(v, (str, int)) else v
            row[k] = v if not (isinstance(v, float) and not math.isfinite(v)) else str(v)
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        except OSError as e:  # a full disk: one error naming the log (a cut line is skipped on reading)
            raise (write_failure(self.path, e) or e) from e


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
    return rows


class Progress:
    """tqdm bar with step rate and ETA on the main process; silent elsewhere."""

    def __init__(self, total: int, start: int, *, enabled: bool, desc: str = "train"):
        self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", dynamic_ncols=True, disable=not enabled)

    def update(self, postfix: dict[str, float]) -> None:
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
