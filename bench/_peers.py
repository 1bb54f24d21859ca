"""Importing the peer libraries the benchmarks compare against, inside the benchmark process only.

magvit2-pytorch imports torchvision. PyPI's torchvision wheel is built for a CUDA torch; beside the
CPU torch this project pins, its C++ extension does not load, and ``import torchvision`` then fails
with "operator torchvision::nms does not exist": its fake-tensor registrations
(``torchvision/_meta_registrations.py``) need the ``nms`` / ``qnms`` schemas that the extension
would have defined. The peers never call those ops, so declaring the two schemas (no kernel) is
enough to import them. We only do so after a plain import failed, and only in this process.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from types import ModuleType

import torch

INSTALL_HINT = "install the peers with `make bench` or `pip install -e '.[bench]'` (keep torch pinned)"

# torchvision's schemas for the ops it registers fake kernels for at import time.
_TORCHVISION_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_torchvision_lib: torch.library.Library | None = None  # kept alive: dropping it removes the schemas


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
        return True
    except (AttributeError, RuntimeError):
        return False


def import_torchvision() -> ModuleType:
    """``import torchvision``, declaring the missing op schemas if its C++ extension cannot load."""
    global _torchvision_lib
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    # A failed import leaves half-initialized modules behind; drop them before retrying.
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    missing = [op for op in _TORCHVISION_SCHEMAS if not _op_exists(op)]
    if missing:
        _torchvision_lib = torch.library.Library("torchvision", "DEF")
        for op in missing:
            _torchvision_lib.define(_TORCHVISION_SCHEMAS[op])
    return importlib.import_module("torchvision")


def import_peer(name: str, *, needs_torchvision: bool = False) -> tuple[ModuleType | None, str]:
    """``(module, "")`` if the peer imports, else ``(None, reason)``; never raises ImportError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # peers' deprecation warnings (torch.cuda.amp, ...)
            if needs_torchvision:
                import_torchvision()
            return importlib.import_module(name), ""
    except ImportError as e:
        return None, f"{name} is not installed ({e}); {INSTALL_HINT}"
    except Exception as e:  # a peer that is installed but broken must not stop our own numbers
        return None, f"{name} failed to import ({type(e).__name__}: {e}); {INSTALL_HINT}"
