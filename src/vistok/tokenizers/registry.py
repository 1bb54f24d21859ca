"""Find tokenizers: classes by ``model_type`` (:data:`TOKENIZERS`), shipped checkpoints by name,
saved models by folder, and a saved model by the id a token or ``.vtok`` file records."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from vistok.errors import VistokError
from vistok.pretrained import CONFIG_NAME, read_config_json
from vistok.tokenizers.base import TOKENIZERS, Tokenizer
from vistok.tokenizers.magvit2 import Magvit2Tokenizer
from vistok.tokenizers.omni import OmniTokenizer
from vistok.tokenizers.shipped import DEFAULT_MODEL_DIR, SHIPPED_MODELS, resolve_model_dir, shipped_model_dir

# The families every install knows register themselves with TOKENIZERS when imported (above).
__all__ = ["Magvit2Tokenizer", "OmniTokenizer", "TOKENIZERS", "SHIPPED_MODELS", "DEFAULT_MODEL_DIR",
           "load_tokenizer", "resolve_model_dir", "shipped_model_dir", "candidate_model_dirs", "find_model_dir"]

def load_tokenizer(path_or_name: str | Path, *, map_location: str = "cpu") -> Tokenizer:
    """Rebuild a tokenizer from ``config.json`` and load ``model.safetensors`` (no pickle)."""
    return Tokenizer.from_pretrained(path_or_name, map_location=map_location)


def candidate_model_dirs(models: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Saved-model folders to search: each of ``models`` (a saved model, a run folder, or a folder
    whose sub-folders are saved models), then the shipped models; each folder once."""
    seen: set[Path] = set()
    found: list[Path] = []
    for m in models:
        d = shipped_model_dir(m) or Path(m)
        if (d / CONFIG_NAME).is_file():
            found.append(d)
        elif (d / "model" / CONFIG_NAME).is_file():
            found.append(d / "model")
        elif d.is_dir():
            found.extend(sorted(p.parent for p in d.glob(f"*/{CONFIG_NAME}")))
    found += [d for d in SHIPPED_MODELS.values() if (d / CONFIG_NAME).is_file()]
    for d in found:
        key = d.resolve()
        if key not in seen:
            seen.add(key)
            yield d


def find_model_dir(id_prefix: str, models: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Folders among :func:`candidate_model_dirs` whose ``config.json`` records a model id starting
    with ``id_prefix`` (or records none); unreadable folders are skipped."""
    prefix = id_prefix.lower()
    for d in candidate_model_dirs(models):
        try:
            recorded = read_config_json(d).get("model_id")
        except VistokError:
            continue
        if isinstance(recorded, str) and not recorded.lower().startswith(prefix):
            continue
        yield d
