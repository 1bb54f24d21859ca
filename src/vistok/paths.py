"""Where vistok reads and writes: inputs must be regular files, outputs must never be an input.

One behaviour for every command: an input that is missing, a folder, a FIFO or a device is one
clear error (a FIFO would block forever); an output that resolves to one of the command's inputs
is refused (``vistok reconstruct m x.mp4 x.mp4`` must not replace the user's file); an output that
is a folder or a non-regular file is refused; a missing output folder is created. Writes then go
through :mod:`vistok.atomic`, so a failure never leaves a partial file under the final name.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from vistok.errors import VistokError


def check_input_file(path: str | os.PathLike, what: str = "input") -> Path:
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise VistokError(f"{what} {p} does not exist") from None
    except OSError as e:
        raise VistokError(f"cannot read {what} {p}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise VistokError(f"{what} {p} is a folder, expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise VistokError(f"{what} {p} is not a regular file (a FIFO, socket or device): refusing to read it")
    return p


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_output_file(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "output") -> Path:
    """Validate an output path (see the module doc) and create its missing parent folders."""
    p = Path(path)
    if p.exists():
        if p.is_dir():
            raise VistokError(f"{what} {p} is a folder, expected a file name")
        if not p.is_file():
            raise VistokError(f"{what} {p} is not a regular file (a FIFO, socket or device): refusing to write to it")
    for i in inputs:
        if i is not None and Path(i).exists() and _same(p, Path(i)):
            raise VistokError(f"{what} {p} is the input {i}: refusing to overwrite it; choose another name")
    parent = p.parent
    for ancestor in [parent, *parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise VistokError(f"cannot write {what} {p}: {ancestor} is a file, not a folder")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VistokError(f"cannot create the folder of {what} {p}: {e.strerror}") from None
    return p


def check_output_dir(path: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), what: str = "output folder") -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VistokError(f"{what} {p} exists and is not a folder")
    for i in inputs:
        if i is not None and Path(i).exists() and _same(p, Path(i)):
            raise VistokError(f"{what} {p} is the input {i}: refusing to write into it")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VistokError(f"cannot create {what} {p}: {e.strerror}") from None
    return p


class FolderLock:
    """An exclusive lock on a run folder (``.vistok.lock``), held while a run writes to it: a second
    run started into the same folder stops with a clear error instead of silently losing results.
    Released by :meth:`release` or when the process ends (the kernel drops ``flock`` locks)."""

    NAME = ".vistok.lock"

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / self.NAME
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            self._fd = None
            raise VistokError(f"{Path(folder)} is in use by another vistok run; wait for it to finish or choose another --out") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        self.release()
