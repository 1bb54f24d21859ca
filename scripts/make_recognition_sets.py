"""Write the labelled sets of docs/recognition.md as class-folder trees ``OUT/<set>/{train,test}/<class>/``.

Sources (Debian packages, fetched once without installing):

    mkdir -p pkgs && cd pkgs
    apt-get download opencv-doc tuxpaint-stamps-default plasma-workspace-wallpapers gnome-backgrounds \
        lomiri-wallpapers dataset-fashion-mnist
    for f in *.deb; do dpkg-deb -x "$f" root; done

then ``python scripts/make_recognition_sets.py --root pkgs/root --out sets``. Fashion-MNIST needs no
conversion (``train-classifier`` and ``classify`` read its IDX folder,
``pkgs/root/usr/share/datasets/fashion-mnist``).

* ``digits``: OpenCV's ``digits.png`` (5,000 handwritten digits, 20 x 20, 500 per class in blocks of
  five rows of 100). The left 50 columns train, the right 50 test, as in OpenCV's own kNN sample.
* ``stamps``: Tux Paint's photographic stamps, one class per category folder with at least
  ``--min-stamps`` pictures; 80 / 20 split of each class by a hash of the file name.
* ``motion``: camera motions over photographs (:mod:`vistok.recognize.motion`), ``--clips`` clips
  per photo and motion, ``--frames`` frames of ``--size`` px, lossless-looking H.264 (crf 8); photos
  split 80 / 20 by a hash of their name, so no test photo is seen in training.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vistok.data.images import IMAGE_EXTENSIONS, read_image
from vistok.data.video import VideoWriter
from vistok.recognize.motion import MOTIONS, motion_clip, split_of


def find(roots: list[Path], rel: str) -> Path:
    for r in roots:
        if (r / rel).exists():
            return r / rel
    raise SystemExit(f"none of {', '.join(map(str, roots))} holds {rel}")


def make_digits(roots: list[Path], out: Path) -> int:
    src = find(roots, "usr/share/doc/opencv-doc/examples/data/digits.png")
    sheet = np.asarray(Image.open(src).convert("L"))
    if sheet.shape != (1000, 2000):
        raise SystemExit(f"{src}: expected a 1000 x 2000 sheet, got {sheet.shape}")
    n = 0
    for row in range(50):
        digit = row // 5
        for col in range(100):
            cell = sheet[row * 20 : (row + 1) * 20, col * 20 : (col + 1) * 20]
            split = "train" if col < 50 else "test"
            d = out / "digits" / split / str(digit)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(cell).save(d / f"{row:02d}-{col:02d}.png")
            n += 1
    return n


def make_stamps(roots: list[Path], out: Path, min_stamps: int) -> dict[str, int]:
    base = find(roots, "usr/share/tuxpaint/stamps")
    counts = {}
    for cat in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(f for f in cat.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if len(files) < min_stamps:
            continue
        counts[cat.name] = len(files)
        for f in files:
            rel = f.relative_to(cat)
            name = "-".join(rel.parts)
            d = out / "stamps" / split_of(f"{cat.name}/{rel}") / cat.name
            d.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, d / name)
    return counts


def photos(roots: list[Path], min_side: int) -> list[Path]:
    """One file per wallpaper (the largest of a plasma wallpaper's sizes), every GNOME / Lomiri
    background, and OpenCV's sample pictures of at least ``min_side`` px."""
    found: list[Path] = []
    for root in roots:
        found += _photos_under(root)
    keep = []
    for f in found:
        try:
            with Image.open(f) as im:
                if min(im.size) >= min_side and im.mode not in ("1", "P"):
                    keep.append(f)
        except OSError:
            continue
    return keep


def _photos_under(root: Path) -> list[Path]:
    found: list[Path] = []
    plasma = root / "usr/share/wallpapers"
    if plasma.is_dir():
        for wp in sorted(p for p in plasma.iterdir() if p.is_dir()):
            imgs = [f for f in (wp / "contents/images").glob("*") if f.suffix.lower() in IMAGE_EXTENSIONS]
            if imgs:
                found.append(max(imgs, key=lambda f: f.stat().st_size))
    for sub in ("usr/share/backgrounds", "usr/share/doc/opencv-doc/examples/data"):
        d = root / sub
        if d.is_dir():
            found += sorted(f for f in d.rglob("*") if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return found


def make_motion(roots: list[Path], out: Path, *, clips: int, frames: int, size: int, seed: int) -> dict[str, int]:
    files = photos(roots, min_side=4 * size)
    rng = np.random.default_rng(seed)
    counts = {"train": 0, "test": 0, "train_photos": 0, "test_photos": 0}
    for k, f in enumerate(files):
        photo = read_image(f)
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        split = split_of(f.name)
        counts[f"{split}_photos"] += 1
        for motion in MOTIONS:
            d = out / "motion" / split / motion
            d.mkdir(parents=True, exist_ok=True)
            for j in range(clips):
                clip = motion_clip(photo[..., :3], motion, frames=frames, size=size, rng=rng)
                with VideoWriter(d / f"{k:03d}-{f.stem[:24]}-{j}.mp4", fps=8, crf=8) as w:
                    w.write(clip)
                counts[split] += 1
        print(f"\rmotion: {k + 1}/{len(files)} photos", end="", file=sys.stderr)
    print(file=sys.stderr)
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, action="append", required=True,
                   help="where the Debian packages were unpacked (repeatable)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sets", default="digits,stamps,motion")
    p.add_argument("--min-stamps", type=int, default=30)
    p.add_argument("--clips", type=int, default=3, help="motion clips per photo and motion")
    p.add_argument("--frames", type=int, default=9)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    for name in a.sets.split(","):
        if (a.out / name).exists():
            raise SystemExit(f"{a.out / name} exists; remove it first")
        if name == "digits":
            print(f"digits: {make_digits(a.root, a.out)} pictures")
        elif name == "stamps":
            print(f"stamps: {make_stamps(a.root, a.out, a.min_stamps)}")
        elif name == "motion":
            print(f"motion: {make_motion(a.root, a.out, clips=a.clips, frames=a.frames, size=a.size, seed=a.seed)}")
        else:
            raise SystemExit(f"unknown set {name!r}")


if __name__ == "__main__":
    main()
