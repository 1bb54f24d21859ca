"""One save/load for every model vistok writes: tokenizers, token language models and the
metric networks.

A saved model is a folder with ``config.json`` (``model_type``, the typed config as a mapping, the
vistok version and whatever the model adds, e.g. a tokenizer's ``model_id``) and
``model.safetensors`` (weights only: nothing is ever unpickled). Both files are written atomically.
Loading resolves the folder (a training run's folder means its ``model/``), reads the JSON (one
clear error for unreadable, non-UTF-8 or ill-typed files), finds the class through the model
kind's :class:`ModelRegistry`, builds the config with the one typed builder and loads the weights
strictly (a missing or unexpected tensor is an error naming a few of them).

Networks without a config of their own (the metric networks) use the file-level half:
:func:`save_weights` / :func:`load_weights` / :func:`load_into`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from vistok import __version__
from vistok.atomic import atomic_output, atomic_write_text
from vistok.configuration import read_text, to_dict
from vistok.errors import VistokError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

M = TypeVar("M")


# -- weight files ---------------------------------------------------------------------------------


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Write a safetensors file atomically (contiguous CPU copies of ``tensors``)."""
    path = Path(path)
    clean = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_output(path) as tmp:
        save_file(clean, str(tmp), metadata=metadata)
    return path


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; any failure is one :class:`VistokError` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise VistokError(f"weights file {p} does not exist")
    try:
        return load_file(str(p))
    except Exception as e:  # safetensors raises its own error types on corrupt files
        raise VistokError(f"cannot load weights {p}: {e}") from None


def weights_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file's header."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise VistokError(f"cannot read weights {path}: {e}") from None


def load_into(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``module.load_state_dict(state)`` strictly, with shapes checked; one clear error otherwise."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise VistokError(
            f"weights in {source} do not match the model: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}"
        )
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise VistokError(f"weights in {source} do not match the model: {k} has shape {tuple(state[k].shape)}, "
                          f"expected {tuple(own[k].shape)} ({len(wrong)} tensor(s) differ)")
    module.load_state_dict(state, strict=True)


# -- model folders --------------------------------------------------------------------------------


def read_config_json(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a saved model as a mapping with a ``model_type`` string and a ``config``
    mapping; unreadable, non-UTF-8, invalid or ill-shaped files are one clear error."""
    p = Path(directory) / CONFIG_NAME
    try:
        meta = json.loads(read_text(p, "model config"))
    except json.JSONDecodeError as e:
        raise VistokError(f"cannot read {p}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise VistokError(f"{p}: expected a JSON object, got {type(meta).__name__}")
    if not isinstance(meta.get("model_type"), str):
        raise VistokError(f"{p}: 'model_type' must be a string, got {meta.get('model_type')!r}")
    if not isinstance(meta.get("config"), dict):
        raise VistokError(f"{p}: 'config' must be a JSON object")
    return meta


def resolve_run_dir(path: str | Path, what: str) -> Path:
    """A saved-model folder, or a training run whose ``model/`` holds one."""
    d = Path(path)
    if (d / "model" / CONFIG_NAME).is_file() and not (d / CONFIG_NAME).is_file():
        d = d / "model"
    if not d.is_dir():
        raise VistokError(f"{what} directory {d} does not exist (expected a folder written by save_pretrained)")
    if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
        raise VistokError(f"{d} is not a saved {what}: expected {CONFIG_NAME} and {WEIGHTS_NAME} inside")
    return d


class ModelRegistry(Generic[M]):
    """Classes of one kind of model by name (``model_type`` for tokenizers, ``kind`` for LMs)."""

    def __init__(self, what: str):
        self.what = what
        self.classes: dict[str, type[M]] = {}

    def register(self, name: str):
        def add(cls: type[M]) -> type[M]:
            self.classes[name] = cls
            return cls

        return add

    def get(self, name: Any, *, where: str = "") -> type[M]:
        if name not in self.classes:
            prefix = f"{where}: " if where else ""
            raise VistokError(f"{prefix}unknown {self.what} {name!r}; known: {sorted(self.classes)}")
        return self.classes[name]

    def __contains__(self, name: object) -> bool:
        return name in self.classes

    def names(self) -> list[str]:
        return sorted(self.classes)


class Pretrained:
    """Mixin for an ``nn.Module`` with a typed ``self.config``: ``save_pretrained`` /
    ``from_pretrained`` as described in the module doc.

    A family sets ``model_type`` (recorded in ``config.json``), ``config_class`` and ``saved_what``
    (for messages), and may override :meth:`extra_metadata` (more keys for ``config.json``),
    :meth:`resolve_dir` (e.g. shipped names) and :meth:`class_for` (which subclass a config builds).
    """

    model_type: ClassVar[str] = ""
    config_class: ClassVar[type] = object
    saved_what: ClassVar[str] = "model"
    config: Any

    def config_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "config": to_dict(self.config)}

    def extra_metadata(self, weight_dtype: torch.dtype | None) -> dict[str, Any]:
        return {}

    def weights_metadata(self) -> dict[str, str]:
        return {"model_type": self.model_type}

    def save_pretrained(self, directory: str | Path, *, weight_dtype: torch.dtype | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created if needed).

        ``weight_dtype`` (e.g. ``torch.float16``) stores floating-point weights at that precision
        (half the file); they are loaded back into the model's own dtype."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {
            k: (v.to(weight_dtype) if weight_dtype is not None and v.is_floating_point() else v)
            for k, v in self.state_dict().items()  # type: ignore[attr-defined]
        }
        save_weights(d / WEIGHTS_NAME, tensors, self.weights_metadata())
        meta = self.config_dict()
        meta["vistok_version"] = __version__
        meta.update(self.extra_metadata(weight_dtype))
        atomic_write_text(d / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
        return d

    @classmethod
    def resolve_dir(cls, path_or_name: str | Path) -> Path:
        return resolve_run_dir(path_or_name, cls.saved_what)

    @classmethod
    def class_for(cls, meta: dict[str, Any], config: Any, source: Path) -> type:
        return cls

    @classmethod
    def config_from_meta(cls, meta: dict[str, Any], source: Path) -> Any:
        try:
            return cls.config_class.from_dict(meta["config"])
        except VistokError as e:
            raise VistokError(f"{source / CONFIG_NAME}: {e}") from None

    @classmethod
    def from_config_dict(cls, meta: dict[str, Any], source: Path = Path(".")):
        """A freshly initialized model of the class and config ``meta`` (a ``config.json``) names."""
        config = cls.config_from_meta(meta, source)
        return cls.class_for(meta, config, source)(config)

    @classmethod
    def from_pretrained(cls, path_or_name: str | Path, *, map_location: str | torch.device = "cpu"):
        """Rebuild a model saved by :meth:`save_pretrained` (or a training run's folder), in eval mode."""
        d = cls.resolve_dir(path_or_name)
        meta = read_config_json(d)
        model = cls.from_config_dict(meta, d)
        load_into(model, load_weights(d / WEIGHTS_NAME), d / WEIGHTS_NAME)
        return model.to(map_location).eval()
