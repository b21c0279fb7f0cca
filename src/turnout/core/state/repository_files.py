"""The model repository's file primitives: crash-safe writes, and reads that follow no symlink.

A single file is replaced atomically: temp file, fsync, ``os.replace``, fsync
of the directory, so a crash leaves the old content or the new. A read
refuses a symlink (it could lead outside the repository) and anything but a
regular file (a FIFO planted as model.onnx would block a plain open()).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from turnout.core.errors import StoreError

__all__ = [
    "NOFOLLOW",
    "TEMP",
    "atomic_write",
    "discard",
    "dump_json",
    "fsync_directory",
    "read_file",
    "read_json",
    "sorted_entries",
    "write_new",
]

TEMP = "tmp"  # the suffix of atomic_write's hidden temp file

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
# A FIFO planted as model.onnx would block a plain open() forever.
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old content or the new."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".{TEMP}")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a directory's entries (renames, new files) durable; a no-op where unsupported."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems (and Windows) cannot fsync a directory
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes) -> None:
    """Write a file that must not exist yet, durably (fsync before it returns)."""
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def read_file(path: Path) -> bytes:
    """Return a regular file's bytes; refuse a symlink (it could lead anywhere) or a device."""
    if path.is_symlink():
        raise StoreError(f"{path.name} is a symlink, which the repository never follows")
    fd = os.open(path, os.O_RDONLY | NOFOLLOW | _NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise StoreError(f"{path.name} is not a regular file")
        return file.read()


def read_json(path: Path) -> dict[str, Any]:
    """Return the JSON object a regular file holds; ValueError if it holds something else."""
    data = json.loads(read_file(path))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} does not hold a JSON object")
    return data


def dump_json(data: Mapping[str, Any]) -> bytes:
    """Return ``data`` as the repository writes JSON: indented, sorted, no NaN."""
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False).encode()


def discard(path: Path) -> None:
    """Remove a file, a symlink or a directory tree, whichever ``path`` is; gone is fine."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def sorted_entries(directory: Path) -> Iterator[os.DirEntry[str]]:
    """Return a directory's entries, sorted by name."""
    with os.scandir(directory) as scan:
        entries = list(scan)
    return iter(sorted(entries, key=lambda entry: entry.name))
