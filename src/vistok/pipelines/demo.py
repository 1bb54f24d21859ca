"""``vistok demo`` / ``make demo``: the whole pipeline on an embedded default, in minutes on a CPU.

1. Train the ``tiny`` MAGVIT-v2 tokenizer from scratch on the sample media that ships with the
   install (two real clips and seven photographs; the third clip is held out).
2. Tokenize and rebuild the held-out clip, whole, with the model just trained and with the
   checkpoint shipped in the package (trained longer, then on the vistok corpus: its MODEL_CARD.md).
3. Write a report: metrics.json, a side-by-side MP4 and GIF, a frame grid, the training
   reconstruction grid and loss plot, and report.md; print where it is.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from vistok.data.samples import heldout_clip, training_files
from vistok.data.video import write_video
from vistok.errors import VistokError
from vistok.pipelines.reconstruct import reconstruct_file
from vistok.tokenizers.registry import DEFAULT_MODEL_DIR, load_tokenizer
from vistok.train.config import load_train_config
from vistok.pictures import comparison_grid
from vistok.train.trainer import train


def _say(msg: str) -> None:
    print(msg, flush=True)


def _fresh(run: Path) -> None:
    """Remove a previous demo's training folder (only if it is one)."""
    if run.exists():
        if not (run / "metrics.jsonl").exists() and any(run.iterdir()):
            raise VistokError(f"{run} exists and is not a vistok training run; choose another --out")
        shutil.rmtree(run)


def run_demo(out: Path, *, steps: int = 400, time_budget: float = 360.0) -> dict:
    t_start = time.time()
    out.mkdir(parents=True, exist_ok=True)
    files = training_files()
    held = heldout_clip()
    _say(f"vistok demo -> {out.resolve()}")
    _say(f"  training data: {', '.join(p.name for p in files)}")
    _say(f"  held-out clip: {held.name}")
    _say(f"[1/3] training the tiny MAGVIT-v2 tokenizer for {steps} steps (time budget {time_budget / 60:.1f} min) ...")
    run = out / "train"
    _fresh(run)
    cfg = load_train_config("tiny", [f"steps={steps}"])
    t0 = time.time()
    res = train(cfg, run, time_budget=time_budget)
    train_s = time.time() - t0
    if res.step < steps:
        _say(f"  time budget reached after {res.step} of {steps} steps; continuing with that model")

    _say(f"[2/3] reconstructing {held.name} (all frames, native size) ...")
    results = {}
    rows = []
    models = [("demo model", run / "model")]
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        models.append(("shipped model", DEFAULT_MODEL_DIR))
    original = None
    for label, path in models:
        tok = load_tokenizer(path)
        t1 = time.time()
        rec = reconstruct_file(tok, held)
        seconds = time.time() - t1
        if original is None:
            original = rec.original
            rows.append(("original", rec.original))
        rows.append((label, rec.reconstructed))
        m = {k: v for k, v in rec.metrics.items() if k != "psnr_per_frame"}
        m["seconds"] = round(seconds, 2)
        m["frames_per_second"] = round(rec.metrics["frames"] / seconds, 2)
        results[label] = m
        _say(f"  {label:14s} {rec.summary()}")

    _say("[3/3] writing the report ...")
    side = np.concatenate([r[1] for r in rows], axis=2)  # original | demo | shipped, left to right
    fps = 15.0
    write_video(out / "side_by_side.mp4", side, fps=fps, crf=12)
    write_video(out / "side_by_side.gif", side[::2], fps=fps / 2)
    comparison_grid(rows, frames=6, scale=2).save(out / "frames.png")
    for name in ("recon_latest.png", "losses.png"):
        if (run / name).exists():
            shutil.copy(run / name, out / f"train_{name}")
    report = {
        "heldout_clip": held.name,
        "training_files": [p.name for p in files],
        "train": {
            "steps": res.step,
            "seconds": round(train_s, 1),
            "steps_per_second": round(res.step / train_s, 3),
            "last_metrics": {k: round(v, 5) for k, v in res.last_metrics.items()},
        },
        "reconstruction": results,
        "total_seconds": round(time.time() - t_start, 1),
    }
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# vistok demo",
        "",
        f"Tiny MAGVIT-v2 tokenizer trained {res.step} steps ({train_s / 60:.1f} min on this CPU) on "
        + ", ".join(p.name for p in files)
        + f"; evaluated on the held-out clip {held.name}.",
        "",
        "| model | PSNR (dB) | SSIM | MS-SSIM | tokens | bpp (raw) | frames/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in results.items():
        ms = f"{m['ms_ssim']:.4f}" if m.get("ms_ssim") is not None else "-"
        lines.append(
            f"| {label} | {m['psnr']:.2f} | {m['ssim']:.4f} | {ms} | {m['tokens']} | {m['bits_per_pixel_raw']:.4f} | {m['frames_per_second']} |"
        )
    lines += [
        "",
        "- `side_by_side.mp4` / `.gif`: original | demo model | shipped model",
        "- `frames.png`: the same frames from each",
        "- `train_recon_latest.png`: training clips (rows: input, reconstruction)",
        "- `train_losses.png`: training curves; `train/metrics.jsonl`: every logged step",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _say("\n".join(lines[4:4 + 2 + len(results)]))
    _say(f"\nreport: {(out / 'report.md').resolve()}  (total {time.time() - t_start:.0f} s)")
    return report
