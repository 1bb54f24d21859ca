"""Real sample data that installs from package registries (the ``data`` extra).

* Clips: the MP4s shipped inside the ``absolutely-not-scikit-video`` wheel (module ``skvideo``):
  bikes (640x272, 250 frames, 25 fps, live action), bigbuckbunny (1280x720, 132 frames, 25 fps,
  animation) and carphone_pristine (176x144, 120 frames, 29.97 fps, a videophone head-and-shoulders
  scene). carphone_distorted is left out: it is a degraded copy of carphone_pristine, so it adds no
  content and would leak the held-out clip into training.
* Images: colour photographs shipped inside ``scikit-image`` (``skimage/data``).

The files are located on disk without importing either package: importing ``skvideo`` probes for a
system ffmpeg binary, and importing ``skimage`` is slow. ``importlib.util.find_spec`` on a top-level
name only reads the import path, it does not execute the package.

Held-out clip: **carphone_pristine**. It is a different scene (a face in a car) from both training
clips, so an evaluation on it measures generalization rather than memorization of the training
pixels; it is also the smallest (176x144), so evaluating a whole clip is cheap on a CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from vistok.errors import VistokError

CLIP_NAMES = ("bikes", "bigbuckbunny", "carphone_pristine")
HELDOUT_CLIP = "carphone_pristine"
# Natural colour photographs; the grey, synthetic (chessboard, color wheel, logo) and
# scientific-plot images in skimage/data are left out as unlike the footage a tokenizer sees.
IMAGE_NAMES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "hubble_deep_field.jpg",
    "retina.jpg",
)

# Photographs never used for training, for evaluating on images: a grey photograph, a colour
# micrograph, a grey photograph of coins and a grass texture (grey images are read as RGB).
HELDOUT_IMAGE_NAMES = ("camera.png", "ihc.png", "coins.png", "grass.png")

_INSTALL_HINT = "pip install absolutely-not-scikit-video scikit-image  (or: pip install 'vistok[data]')"


def _package_dir(module: str, dist: str) -> Path:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise VistokError(f"sample data needs the {dist!r} package, which is not installed; {_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def _existing(folder: Path, names, dist: str) -> list[Path]:
    paths = [folder / n for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise VistokError(f"{dist} is installed but lacks {missing} under {folder}; reinstall it: {_INSTALL_HINT}")
    return paths


def sample_clips() -> list[Path]:
    """The real clips (bikes, bigbuckbunny, carphone_pristine), held-out one included."""
    folder = _package_dir("skvideo", "absolutely-not-scikit-video") / "datasets" / "data"
    return _existing(folder, [f"{n}.mp4" for n in CLIP_NAMES], "absolutely-not-scikit-video")


def sample_images() -> list[Path]:
    """Colour photographs from scikit-image (astronaut, chelsea, coffee, rocket, ...)."""
    folder = _package_dir("skimage", "scikit-image") / "data"
    return _existing(folder, IMAGE_NAMES, "scikit-image")


def heldout_images() -> list[Path]:
    """scikit-image pictures kept out of training (``HELDOUT_IMAGE_NAMES``), for evaluation."""
    folder = _package_dir("skimage", "scikit-image") / "data"
    return _existing(folder, HELDOUT_IMAGE_NAMES, "scikit-image")


def heldout_clip() -> Path:
    """The clip kept out of training for evaluation: carphone_pristine (see the module docstring)."""
    return next(p for p in sample_clips() if p.stem == HELDOUT_CLIP)


def training_files() -> list[Path]:
    """Every sample clip and image except the held-out clip."""
    held = heldout_clip()
    return [p for p in sample_clips() if p != held] + sample_images()
