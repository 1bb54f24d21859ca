"""Atomic file output: write beside the target, rename over it only once the write succeeded.

A reader never sees a half-written file under the final name, and a failed or interrupted write
(an exception, a full disk) removes its temporary file and leaves any previous file intact.
Temporaries are named ``.STEM.vistok-tmp-PID.SUFFIX`` (the suffix kept, so writers that choose a
format by it still work) so that stale ones left by a killed process can be recognised and removed
(:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vistok.errors import VistokError

TMP_MARK = ".vistok-tmp-"

# errno values that mean "the file system would not take the bytes", whatever was being written.
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS})


def write_failure(path: Path, error: OSError) -> VistokError | None:
    """A one-line error naming the *final* file (not its temporary) when ``error`` is a full disk,
    a file-size limit, a quota or a read-only file system; ``None`` for other errors."""
    if error.errno in WRITE_FAILURES:
        return VistokError(f"cannot write {path}: {os.strerror(error.errno)}")
    return None


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")


@contextmanager
def atomic_output(path: str | Path, *, fsync: bool = True) -> Iterator[Path]:
    """``with atomic_output(p) as tmp: write(tmp)`` -- ``tmp`` is renamed to ``p`` when the block
    ends without an exception (after an fsync), and removed otherwise. A full disk (or a file-size
    limit, quota, read-only file system) becomes one :class:`VistokError` naming ``path``."""
    path = Path(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        failure = write_failure(path, e)
        if failure is None:
            raise
        raise failure from e
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporaries that killed vistok processes left in ``folder`` (not recursive); returns
    what was removed. Temporaries of processes still alive are kept."""
    removed = []
    d = Path(folder)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        name = p.name
        if TMP_MARK not in name or not p.is_file():
            continue
        pid = name.rsplit(TMP_MARK, 1)[1].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
