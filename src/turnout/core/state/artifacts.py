"""ArtifactStore: deployed ONNX files, stored once by digest, for every process to load.

A deploy through any process of a fleet on one host puts the model's ONNX
bytes here under their sha256, then records the version in the control
state; every other process loads it from here when it hears of it. A file
is written atomically (repository_files) and never changed: its name is
its content's digest, so two writers of one model write the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from turnout.core.errors import StoreError
from turnout.core.state.repository_files import atomic_write, read_file

__all__ = ["ArtifactStore"]

_DIGEST = re.compile(r"[0-9a-f]{64}")


class ArtifactStore:
    """A directory of ``<sha256>.onnx`` files; methods block on the disk (call them in a thread)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {self.directory} for artifacts: {exc}") from exc

    def path(self, digest: str) -> Path:
        """Return where the artifact of ``digest`` lives; refuse anything but a sha256."""
        if _DIGEST.fullmatch(digest) is None:
            raise StoreError(f"{digest!r} is not a sha256 digest")
        return self.directory / f"{digest}.onnx"

    def put(self, onnx_bytes: bytes) -> str:
        """Store ``onnx_bytes`` (once: a digest already there is kept); return the digest."""
        digest = hashlib.sha256(onnx_bytes).hexdigest()
        path = self.path(digest)
        if not path.exists():
            atomic_write(path, onnx_bytes)
        return digest

    def get(self, digest: str) -> bytes:
        """Return the bytes stored under ``digest``; StoreError if missing or not matching."""
        try:
            data = read_file(self.path(digest))
        except OSError as exc:
            raise StoreError(f"artifact {digest} cannot be read: {exc}") from exc
        if hashlib.sha256(data).hexdigest() != digest:
            raise StoreError(f"artifact {digest} does not match its digest")
        return data
