"""Spatial tiling's seam error (``vistok reconstruct --tile``): tiled against whole-frame
reconstruction of the same clip, in one run.

    python bench/tiling_seams.py VIDEO [--model default] [--size 288] [--frames 17] [--tiles 128,192] [--overlaps 0,16,32,64]

Tiles are not exact: per-frame group normalization takes each tile's own statistics and the
convolutions see zero padding at a tile's edge. For every tile size and overlap this prints the
PSNR of the tiled and of the whole-frame reconstruction against the original, the PSNR of the tiled
one against the whole-frame one (overall, within ``--band`` pixels of a tile boundary and away
from the boundaries), its largest difference in 8-bit levels, and the time per frame. Results also
go to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from vistok.pipelines.reconstruct import plan_media, reconstruct_media
from vistok.pipelines.tiling import TiledReconstruction
from vistok.tokenizers.registry import load_tokenizer


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    mse = d[:, mask].mean() if mask is not None else d.mean()
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def seam_mask(tiles: TiledReconstruction, height: int, width: int, band: int) -> np.ndarray:
    """True within ``band`` pixels of an interior tile edge (the edges where tiles meet)."""
    mask = np.zeros((height, width), dtype=bool)
    for (y0, y1), (x0, x1) in tiles.windows:
        for y in (y0, y1):
            if 0 < y < height:
                mask[max(0, y - band) : y + band, x0:x1] = True
        for x in (x0, x1):
            if 0 < x < width:
                mask[y0:y1, max(0, x - band) : x + band] = True
    return mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video")
    ap.add_argument("--model", default="default")
    ap.add_argument("--size", type=int, default=288)
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--tiles", default="128,192")
    ap.add_argument("--overlaps", default="0,16,32,64")
    ap.add_argument("--band", type=int, default=8)
    ap.add_argument("--json")
    a = ap.parse_args()
    tok = load_tokenizer(a.model)
    plan = plan_media(tok, a.video, size=a.size, max_frames=a.frames)
    h, w = plan.size
    t0 = time.time()
    whole = reconstruct_media(tok, plan, a.chunk)
    whole_s = (time.time() - t0) / whole.metrics["frames"]
    ref, orig = whole.reconstructed, whole.original
    print(f"{a.video}: {w}x{h}, {whole.metrics['frames']} frames, model {a.model}")
    print(f"whole frame: PSNR {psnr(orig, ref):.2f} dB against the original, {whole_s:.2f} s/frame")
    print("| tile | overlap | tiles | PSNR vs original | tiled vs whole | at seams | away | max diff | s/frame |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [{"tile": None, "psnr_original": psnr(orig, ref), "seconds_per_frame": whole_s}]
    for tile in (int(v) for v in a.tiles.split(",")):
        for overlap in (int(v) for v in a.overlaps.split(",")):
            if overlap >= tile:
                continue
            tiles = TiledReconstruction(tok, h, w, tile, overlap)
            t0 = time.time()
            rec = reconstruct_media(tok, plan, a.chunk, tile=tile, tile_overlap=overlap)
            secs = (time.time() - t0) / rec.metrics["frames"]
            got = rec.reconstructed
            mask = seam_mask(tiles, h, w, a.band)
            row = {"tile": tile, "overlap": overlap, "tiles": len(tiles), "psnr_original": psnr(orig, got),
                   "psnr_vs_whole": psnr(ref, got), "psnr_vs_whole_seams": psnr(ref, got, mask),
                   "psnr_vs_whole_away": psnr(ref, got, ~mask),
                   "max_diff": int(np.abs(ref.astype(np.int16) - got.astype(np.int16)).max()),
                   "seconds_per_frame": secs}
            rows.append(row)
            print(f"| {tile} | {overlap} | {len(tiles)} | {row['psnr_original']:.2f} | {row['psnr_vs_whole']:.2f} | "
                  f"{row['psnr_vs_whole_seams']:.2f} | {row['psnr_vs_whole_away']:.2f} | {row['max_diff']} | {secs:.2f} |",
                  flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"video": a.video, "size": [h, w], "frames": whole.metrics["frames"], "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
