"""``vistok reconstruct`` in bounded memory: planned against measured peak memory, and frames/s,
against frame size, clip length and chunk length, in one run.

    python bench/reconstruct_memory.py VIDEO [--sizes 144,288,576] [--frames 17,65] [--chunks auto,4,16]
    python bench/reconstruct_memory.py /usr/share/doc/opencv-doc/examples/data/vtest.avi   # 768x576, 795 frames

Each configuration runs ``vistok reconstruct MODEL VIDEO out.mp4 --size S --max-frames F`` in a
fresh process (``--chunk-frames N``, or ``--max-memory`` for ``auto``), which reports its own peak
resident memory (``ru_maxrss``) and wall time; the planner's estimate (:mod:`vistok.pipelines.budget`)
is printed beside it, so the table shows how far the plan is from what the process really held.
``--size`` resizes the shorter side (768x576 at 576 is the native size). Results also go to
``--json``. Frames/s depend on what else runs on the machine: run it on idle cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from vistok.cli import main
t0 = time.time()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.time() - t0,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), file=sys.stderr)
"""


def run_one(model: str, video: str, size: int, frames: int, chunk: str, budget: str, out: Path) -> dict:
    args = [model, video, str(out / "r.mp4"), "--size", str(size), "--max-frames", str(frames), "--metrics",
            str(out / "m.json")]
    args += ["--max-memory", budget] if chunk == "auto" else ["--chunk-frames", chunk]
    p = subprocess.run([sys.executable, "-c", CHILD, "reconstruct", *args], capture_output=True, text=True)
    lines = [l for l in p.stderr.splitlines() if l.startswith("{")]
    if p.returncode or not lines:
        return {"error": (p.stderr.strip().splitlines() or ["?"])[-1]}
    res = json.loads(lines[-1])
    if res["code"] != 0:
        return {"error": [l for l in p.stderr.splitlines() if "error" in l][-1:]}
    m = json.loads((out / "m.json").read_text())
    res.update(frames=m["frames"], height=m["height"], width=m["width"], chunk_frames=m["chunk_frames"],
               psnr=m["psnr"], fps=m["frames"] / res["seconds"])
    plan = [l for l in p.stderr.splitlines() if l.startswith("memory:")]
    res["plan"] = plan[0] if plan else None
    return res


def planned_bytes(model: str, height: int, width: int, frames: int, chunk: int) -> int:
    from vistok.pipelines.budget import HEADROOM, RUNTIME_BYTES, meta_copy, process_bytes, streaming_peak_bytes
    from vistok.tokenizers.registry import load_tokenizer

    tok = load_tokenizer(model)
    fixed = process_bytes() + RUNTIME_BYTES
    return fixed + int(HEADROOM * streaming_peak_bytes(meta_copy(tok), height, width, chunk, frames=frames))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("video")
    p.add_argument("--model", default="default")
    p.add_argument("--sizes", default="144,288,576")
    p.add_argument("--frames", default="17,65")
    p.add_argument("--chunks", default="auto,4,16", help="'auto' (the --max-memory plan) and fixed chunk lengths")
    p.add_argument("--max-memory", default="2G", help="the budget of the 'auto' rows")
    p.add_argument("--json", type=Path)
    p.add_argument("--out", type=Path, default=Path("/tmp/vistok-bench-reconstruct"))
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| frames | size | chunk | planned | peak RSS | planned / peak | frames/s | PSNR |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for frames in [int(f) for f in a.frames.split(",")]:
        for size in [int(s) for s in a.sizes.split(",")]:
            for chunk in a.chunks.split(","):
                t0 = time.time()
                r = run_one(a.model, a.video, size, frames, chunk, a.max_memory, a.out)
                r.update(size=size, requested_frames=frames, chunk=chunk, wall=time.time() - t0)
                if "error" not in r:
                    r["planned"] = planned_bytes(a.model, r["height"], r["width"], r["frames"], r["chunk_frames"])
                    print(f"| {r['frames']} | {r['width']}x{r['height']} | {r['chunk_frames']}{' (auto)' if chunk == 'auto' else ''} "
                          f"| {r['planned'] / 2**30:.2f} GiB | {r['peak_rss'] / 2**30:.2f} GiB | {r['planned'] / r['peak_rss']:.2f} "
                          f"| {r['fps']:.2f} | {r['psnr']:.2f} |", flush=True)
                else:
                    print(f"| {frames} | --size {size} | {chunk} | refused: {r['error']} |", flush=True)
                rows.append(r)
                if a.json:
                    a.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
