"""Peak memory of ``vistok eval``, ``compress`` and ``decompress`` against how much data they are
given, in one run: the memory should depend on one clip's work, not on the number of clips or
the clip length.

    python bench/streaming_memory.py --eval-data FOLDER --items 8,32 --video VIDEO --size 288 --frames 17,65

* eval: ``vistok eval MODEL FOLDER --max-clips N`` (no LPIPS/FID/FVD networks, no block means:
  the clip pipeline alone) for each N.
* compress / decompress: ``vistok compress MODEL VIDEO out.vtok --size S --max-frames F`` and back,
  for each F, with ``--max-memory`` when given.

Each command runs in a fresh process that reports its own peak resident memory (``ru_maxrss``) and
wall time. Times depend on what else runs on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from vistok.cli import main
t0 = time.time()
code = main(sys.argv[1:])
print(json.dumps({"code": code, "seconds": time.time() - t0,
                  "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}), file=sys.stderr)
"""


def run(args: list[str]) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    lines = [line for line in p.stderr.splitlines() if line.startswith("{")]
    if p.returncode or not lines:
        raise SystemExit(f"{' '.join(args[:2])} failed ({p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    out = json.loads(lines[-1])
    out["memory_line"] = next((line for line in p.stderr.splitlines() if line.startswith("memory:")), None)
    return out


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--eval-data", help="a folder of clips and images for eval")
    ap.add_argument("--items", default="8,32", help="numbers of eval items")
    ap.add_argument("--video", help="a video for compress / decompress")
    ap.add_argument("--size", type=int, default=288, help="shorter side for compress (default 288)")
    ap.add_argument("--frames", default="17,65", help="clip lengths for compress")
    ap.add_argument("--max-memory", help="budget passed to every command")
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args()
    budget = ["--max-memory", a.max_memory] if a.max_memory else []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.eval_data:
            for n in [int(v) for v in a.items.split(",")]:
                r = run(["eval", a.model, a.eval_data, "--max-clips", str(n), "--no-lpips", "--no-fid", "--no-fvd",
                         "--no-block-means", "--out", str(tmp / f"eval{n}"), *budget])
                rows.append({"command": "eval", "amount": f"{n} items", **r})
                print(f"eval, {n} items: peak {gib(r['peak_rss'])}, {r['seconds']:.0f} s", flush=True)
        if a.video:
            for f in [int(v) for v in a.frames.split(",")]:
                vtok = tmp / f"c{f}.vtok"
                r = run(["compress", a.model, a.video, str(vtok), "--size", str(a.size), "--max-frames", str(f), *budget])
                rows.append({"command": "compress", "amount": f"{f} frames at {a.size} px", **r})
                print(f"compress, {f} frames: peak {gib(r['peak_rss'])}, {r['seconds']:.0f} s; {r['memory_line']}",
                      flush=True)
                r = run(["decompress", str(vtok), str(tmp / f"d{f}.mp4"), *budget])
                rows.append({"command": "decompress", "amount": f"{f} frames at {a.size} px", **r})
                print(f"decompress, {f} frames: peak {gib(r['peak_rss'])}, {r['seconds']:.0f} s; {r['memory_line']}",
                      flush=True)
    print("\n| command | input | peak RSS | s | plan |\n|---|---|---:|---:|---|")
    for r in rows:
        print(f"| {r['command']} | {r['amount']} | {gib(r['peak_rss'])} | {r['seconds']:.0f} | {r['memory_line'] or '–'} |")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
