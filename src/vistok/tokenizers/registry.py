"""Find a tokenizer class by its ``model_type`` and load saved tokenizers (or the shipped default)."""

from __future__ import annotations

import json
from pathlib import Path

from vistok.errors import VistokError
from vistok.tokenizers.base import CONFIG_NAME, WEIGHTS_NAME, Tokenizer
from vistok.tokenizers.magvit2 import Magvit2Tokenizer
from vistok.tokenizers.omni import OmniTokenizer

TOKENIZER_CLASSES: dict[str, type[Tokenizer]] = {
    Magvit2Tokenizer.model_type: Magvit2Tokenizer,
    OmniTokenizer.model_type: OmniTokenizer,
}

_ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_MODEL_DIR = _ASSETS / "default-tokenizer"
# Checkpoints shipped in the package, by the name that loads them (each folder has a MODEL_CARD.md).
SHIPPED_MODELS: dict[str, Path] = {
    "default": DEFAULT_MODEL_DIR,  # MAGVIT-v2 tiny, 18-bit LFQ: the demo's and the docs' model
    # `default` fine-tuned for the codec (bit dropout + MS-SSIM term): `vistok compress tiny-codec ...`
    "tiny-codec": _ASSETS / "tiny-codec-tokenizer",
}


def register_tokenizer(cls: type[Tokenizer]) -> type[Tokenizer]:
    TOKENIZER_CLASSES[cls.model_type] = cls
    return cls


def shipped_model_dir(path_or_name: str | Path) -> Path | None:
    """The package folder of a shipped model's name, or None (not a shipped name, or a local
    directory of that name exists, which wins)."""
    name = str(path_or_name)
    return SHIPPED_MODELS[name] if name in SHIPPED_MODELS and not Path(name).is_dir() else None


def resolve_model_dir(path_or_name: str | Path) -> Path:
    """A shipped model's name (``"default"``, ``"tiny-codec"``: :data:`SHIPPED_MODELS`) -> its folder
    in the package; a training run's directory -> its ``model/`` subfolder; otherwise the directory
    itself. A local directory of the same name as a shipped model wins over it."""
    d = shipped_model_dir(path_or_name)
    if d is not None:
        if not (d / CONFIG_NAME).is_file():
            raise VistokError(f"the shipped tokenizer {str(path_or_name)!r} is missing from {d} (a broken install?)")
        return d
    d = Path(path_or_name)
    if (d / "model" / CONFIG_NAME).is_file() and not (d / CONFIG_NAME).is_file():
        d = d / "model"
    if not d.is_dir():
        raise VistokError(f"model directory {d} does not exist (expected a folder written by save_pretrained)")
    if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
        raise VistokError(f"{d} is not a saved tokenizer: expected {CONFIG_NAME} and {WEIGHTS_NAME} inside")
    return d


def load_tokenizer(path_or_name: str | Path, *, map_location: str = "cpu") -> Tokenizer:
    """Rebuild a tokenizer from ``config.json`` and load ``model.safetensors`` (no pickle)."""
    d = resolve_model_dir(path_or_name)
    try:
        meta = json.loads((d / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VistokError(f"cannot read {d / CONFIG_NAME}: {e}") from None
    model_type = meta.get("model_type") if isinstance(meta, dict) else None
    if model_type not in TOKENIZER_CLASSES:
        raise VistokError(f"{d / CONFIG_NAME}: unknown model_type {model_type!r}; known: {sorted(TOKENIZER_CLASSES)}")
    tok = TOKENIZER_CLASSES[model_type].from_config_dict(meta)
    try:
        tok.load_weights(d / WEIGHTS_NAME)
    except VistokError:
        raise
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise VistokError(f"cannot load weights {d / WEIGHTS_NAME}: {e}") from None
    return tok.to(map_location).eval()
