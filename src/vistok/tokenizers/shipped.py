"""Checkpoints shipped inside the package, by the name that loads them, and how a model name or
folder resolves to a saved-model folder."""

from __future__ import annotations

from pathlib import Path

from vistok.errors import VistokError
from vistok.pretrained import CONFIG_NAME, resolve_run_dir

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL_DIR = _ASSETS / "default-tokenizer"
# Checkpoints shipped in the package, by the name that loads them (each folder has a MODEL_CARD.md).
SHIPPED_MODELS: dict[str, Path] = {
    "default": DEFAULT_MODEL_DIR,  # MAGVIT-v2 tiny, 18-bit LFQ: the demo's and the docs' model
    # `default` fine-tuned for the codec (bit dropout + MS-SSIM term): `vistok compress tiny-codec ...`
    "tiny-codec": _ASSETS / "tiny-codec-tokenizer",
    # OmniTokenizer omni-tiny (VQ 8192) trained on the corpus, image stage then joint
    "omni": _ASSETS / "omni-tokenizer",
}


def shipped_model_dir(path_or_name: str | Path) -> Path | None:
    """The package folder of a shipped model's name, or None (not a shipped name, or a local
    directory of that name exists, which wins)."""
    name = str(path_or_name)
    return SHIPPED_MODELS[name] if name in SHIPPED_MODELS and not Path(name).is_dir() else None


def resolve_model_dir(path_or_name: str | Path) -> Path:
    """A shipped model's name (``"default"``, ``"tiny-codec"``, ``"omni"``: :data:`SHIPPED_MODELS`) -> its folder
    in the package; a training run's directory -> its ``model/`` subfolder; otherwise the directory
    itself. A local directory of the same name as a shipped model wins over it."""
    d = shipped_model_dir(path_or_name)
    if d is not None:
        if not (d / CONFIG_NAME).is_file():
            raise VistokError(f"the shipped tokenizer {str(path_or_name)!r} is missing from {d} (a broken install?)")
        return d
    return resolve_run_dir(path_or_name, "tokenizer")
