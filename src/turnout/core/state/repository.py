"""A model repository on disk: deployed versions as ONNX, and each model's routing state.

Layout::

    <dir>/<model_id>/model.json                      active version, routing, fallback
    <dir>/<model_id>/<version>/model.onnx            the servable model (never a pickle)
    <dir>/<model_id>/<version>/deployment.json       its options and model.onnx's sha256

Single files (model.json) are written atomically: temp file, fsync,
``os.replace``, fsync of the directory. A version is two files, so it is
written whole into a hidden staging directory and swapped in by renames;
the old directory is kept under a hidden name until the swap is durable,
and :meth:`ModelStore.load` finishes or undoes a swap a crash interrupted.
Removals rename to a hidden name first. Hidden names are never valid ids,
so nothing half-written is ever read as a model or a version.

A version directory holding only ``model.onnx`` was put there by hand: it is
read with default options (see :meth:`VersionRecord.found`) and, once
deployed, gets its ``deployment.json``. Symlinks are never followed, so
nothing outside the directory is read or written through one.

The methods here block on the disk: the server calls them in a thread. One
process writes a repository at a time: a server holds an exclusive lock on
``<dir>/.lock`` (see :meth:`ModelStore.lock`). A store opened read-only
takes no lock, repairs nothing and refuses every write, so it can look at a
repository a running server is writing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from turnout.core.errors import InvalidConfigError, InvalidNameError, StoreError
from turnout.core.names import check_name
from turnout.core.resilience.breaker import BreakerConfig
from turnout.core.routing.config import RoutingConfig
from turnout.core.state.repository_files import (
    NOFOLLOW,
    TEMP,
    atomic_write,
    discard,
    dump_json,
    fsync_directory,
    read_file,
    read_json,
    sorted_entries,
    write_new,
)
from turnout.core.state.repository_lock import LOCK_FILE, flock_repository, locking
from turnout.core.state.repository_records import (
    ModelRecord,
    VersionRecord,
    deployment_json,
    stored_version,
)

__all__ = ["ModelStore", "check_path_name", "check_storable", "natural_key"]

logger = logging.getLogger("turnout")

MODEL_FILE = "model.json"
ONNX_FILE = "model.onnx"
DEPLOYMENT_FILE = "deployment.json"

# Suffixes of the hidden entries this module leaves while it writes.
STAGED = "staged"  # a version being written, not yet swapped in
REPLACED = "replaced"  # the old copy of a version being swapped out
DELETED = "deleted"  # a model or version on its way out


def check_storable(
    metadata: Mapping[str, Any], breaker: BreakerConfig, version: str | None = None
) -> None:
    """Raise unless metadata and breaker params are plain JSON data and ``version`` fits on disk.

    InvalidConfigError for the data, InvalidNameError for a version name
    that the repository's layout reserves.
    """
    if version is not None:
        check_path_name("version", version)
    for what, value in (("metadata", metadata), ("breaker params", breaker.params)):
        try:
            json.dumps(dict(value), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(
                f"{what} must be plain JSON data to be stored: {exc}"
            ) from None


def check_path_name(kind: str, name: object) -> str:
    """Return ``name`` if it is a valid id that can name a repository directory."""
    name = check_name(kind, name)
    # A version directory sits beside the model's model.json; compared without
    # case, as a case-insensitive file system would.
    if kind == "version" and name.lower() == MODEL_FILE:
        raise InvalidNameError(f"version {name!r} is reserved by the model repository")
    return name


def natural_key(name: str) -> tuple[tuple[tuple[int, int, str], ...], str]:
    """Sort key that orders ``v2`` before ``v10`` and ``1.9`` before ``1.10``."""
    parts = (part for part in re.split(r"(\d+)", name) if part)
    key = tuple((1, int(p), "") if p.isdigit() else (0, 0, p) for p in parts)
    # The name itself breaks ties between spellings of one number ("v01", "v1").
    return key, name


def _hidden(name: str, kind: str) -> str:
    # Time first, so a directory's leftovers of one name sort oldest first.
    return f".{name}.{time.time_ns():016x}{secrets.token_hex(4)}.{kind}"


def _parse_hidden(entry: str) -> tuple[str, str] | None:
    """Return (name, kind) of a hidden entry this module made, else None."""
    if not entry.startswith("."):
        return None
    parts = entry[1:].rsplit(".", 2)
    if len(parts) != 3 or parts[2] not in (STAGED, REPLACED, DELETED, TEMP):
        return None
    return parts[0], parts[2]


def _complete(directory: Path) -> bool:
    """True if a version directory holds an ONNX file matching its deployment.json."""
    try:
        data = read_json(directory / DEPLOYMENT_FILE)
        onnx_file = read_file(directory / ONNX_FILE)
    except (OSError, ValueError, StoreError):
        return False
    return data.get("sha256") == hashlib.sha256(onnx_file).hexdigest()


def _valid_name(kind: str, name: str) -> bool:
    try:
        check_path_name(kind, name)
    except InvalidNameError:
        return False
    return True


# -- the repository ------------------------------------------------------------------------


class ModelStore:
    """The repository directory: writes are atomic, reads skip what is broken.

    With ``read_only`` the directory must exist; nothing in it is created,
    repaired or removed, and every write raises StoreError.
    """

    def __init__(self, directory: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.root = Path(directory).resolve()
        self.read_only = read_only
        self._lock_fd: int | None = None
        if read_only:
            if not self.root.is_dir():
                what = "is not a directory" if os.path.lexists(self.root) else "does not exist"
                raise StoreError(f"the model repository {self.root} {what}")
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the model repository {self.root}: {exc}") from exc

    # -- the lock --

    def lock(self) -> None:
        """Take the repository's exclusive lock; raise StoreError if another process holds it.

        An advisory ``flock`` on ``<dir>/.lock``, held until :meth:`close` (or
        the process ends, however it ends). A read-only store takes none, and
        a repository on a read-only volume is served unlocked: no one can
        write it anyway.
        """
        if self.read_only or self._lock_fd is not None or not locking:
            return
        fd = self._open_lock_file()
        if fd is None:
            return
        try:
            flock_repository(self.root, fd)
        except StoreError:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid only names the holder in the refusals
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _open_lock_file(self) -> int | None:
        path = self.root / LOCK_FILE
        flags = NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise StoreError(f"cannot lock the model repository {self.root}: {exc}") from exc
        try:  # a read-only volume: lock its lock file if it has one
            return os.open(path, os.O_RDONLY | flags)
        except OSError:
            logger.warning("the model repository %s is not writable; it is not locked", self.root)
            return None

    def close(self) -> None:
        """Release the lock, if this store holds it."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the file releases the flock
            self._lock_fd = None

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(f"the model repository {self.root} is open read-only")

    def path(self, model_id: str, version: str | None = None) -> Path:
        """Return the directory of a model or version; refuse one outside the repository."""
        parts = [check_path_name("model_id", model_id)]
        if version is not None:
            parts.append(check_path_name("version", version))
        path = self.root.joinpath(*parts)
        # A symlink on the way could lead anywhere: the resolved path must be the plain one.
        if path.resolve() != path or not path.is_relative_to(self.root):
            raise StoreError(f"{path} leads outside the model repository {self.root}")
        return path

    # -- writes --

    def save_version(self, record: VersionRecord) -> None:
        """Store one version, replacing any stored copy: a crash leaves the old one or the new."""
        self._check_writable()
        model_dir = self._make(record.model_id)
        target = self.path(record.model_id, record.version)
        self._discard_leftovers(model_dir, record.version)
        staged = model_dir / _hidden(record.version, STAGED)
        staged.mkdir()
        try:
            write_new(staged / ONNX_FILE, record.onnx_bytes)
            write_new(staged / DEPLOYMENT_FILE, deployment_json(record, record.sha256))
            fsync_directory(staged)
            # The staged copy must be durable before the old one leaves its place.
            fsync_directory(model_dir)
            self._swap(staged, target)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise

    def _swap(self, staged: Path, target: Path) -> None:
        parent = target.parent
        if not os.path.lexists(target):
            os.rename(staged, target)
            fsync_directory(parent)
            return
        replaced = parent / _hidden(target.name, REPLACED)
        os.rename(target, replaced)
        try:
            os.rename(staged, target)
        except BaseException:
            os.rename(replaced, target)
            raise
        fsync_directory(parent)
        shutil.rmtree(replaced, ignore_errors=True)

    def save_found(self, record: VersionRecord, sha256: str) -> None:
        """Write the deployment.json of a version found as a bare model.onnx, now deployed.

        Skipped, with a warning, if model.onnx changed since it was read.
        """
        self._check_writable()
        directory = self.path(record.model_id, record.version)
        try:
            current = hashlib.sha256(read_file(directory / ONNX_FILE)).hexdigest()
        except (OSError, StoreError) as exc:
            logger.warning("cannot record %s: %s", directory, exc)
            return
        if current != sha256 or os.path.lexists(directory / DEPLOYMENT_FILE):
            logger.warning("%s changed while it was being deployed; not recorded", directory)
            return
        atomic_write(directory / DEPLOYMENT_FILE, deployment_json(record, sha256))

    def save_model(self, record: ModelRecord) -> None:
        """Store a model's active version, routing and fallback."""
        self._check_writable()
        directory = self._make(record.model_id)
        data = {
            "active": record.active,
            "routing": dict(record.routing),
            "fallback": dict(record.fallback) if record.fallback is not None else None,
        }
        atomic_write(directory / MODEL_FILE, dump_json(data))

    def delete_version(self, model_id: str, version: str) -> None:
        """Remove a stored version (a no-op if it is not stored)."""
        self._check_writable()
        path = self.path(model_id, version)
        if path.parent.is_dir():
            # A leftover of an earlier write must not bring the version back at the next load.
            self._discard_leftovers(path.parent, version)
        self._remove(path)

    def delete_model(self, model_id: str) -> None:
        """Remove a model and every stored version of it."""
        self._check_writable()
        self._remove(self.path(model_id))

    def _make(self, model_id: str) -> Path:
        model_dir = self.path(model_id)
        if not model_dir.is_dir():
            model_dir.mkdir()
            fsync_directory(self.root)
        return model_dir

    @staticmethod
    def _discard_leftovers(model_dir: Path, version: str) -> None:
        for entry in sorted_entries(model_dir):
            parsed = _parse_hidden(entry.name)
            if parsed is not None and parsed[0] == version and parsed[1] in (STAGED, REPLACED):
                discard(model_dir / entry.name)

    @staticmethod
    def _remove(path: Path) -> None:
        if not os.path.lexists(path):
            return
        # A hidden name is never a valid id, so load() ignores it from the rename on.
        doomed = path.with_name(_hidden(path.name, DELETED))
        os.replace(path, doomed)
        fsync_directory(path.parent)
        discard(doomed)

    # -- recovery --

    def recover(self, directory: Path) -> None:
        """Finish or undo what a crash interrupted in ``directory`` (the root or a model's).

        A version missing from its place while its old copy is parked
        (``.replaced``) was being swapped: the complete staged copy goes in,
        or else the old one goes back. Every other leftover is removed.
        A read-only store leaves everything as it is.
        """
        if self.read_only:
            return
        groups: dict[str, dict[str, list[Path]]] = {}
        for entry in sorted_entries(directory):
            parsed = _parse_hidden(entry.name)
            if parsed is None or entry.is_symlink():
                continue
            name, kind = parsed
            groups.setdefault(name, {}).setdefault(kind, []).append(directory / entry.name)
        for name, kinds in groups.items():
            self._recover_name(directory / name, kinds)

    @staticmethod
    def _recover_name(target: Path, kinds: Mapping[str, list[Path]]) -> None:
        staged, replaced = kinds.get(STAGED, []), kinds.get(REPLACED, [])
        keep: Path | None = None
        if replaced and not os.path.lexists(target):
            complete = [path for path in staged if _complete(path)]
            keep = complete[-1] if complete else replaced[-1]
            logger.warning(
                "finishing an interrupted write of %s: %s copy kept",
                target,
                "the new" if complete else "the old",
            )
            os.rename(keep, target)
            fsync_directory(target.parent)
        for paths in kinds.values():
            for path in paths:
                if path != keep:
                    discard(path)

    # -- reads --

    def load(self) -> list[ModelRecord]:
        """Return every stored model, after :meth:`recover`; broken entries are logged, skipped.

        Read-only, nothing is recovered: a write in progress (by a running
        server) is not seen, as its hidden entries are never read.
        """
        try:
            self.recover(self.root)
        except OSError as exc:  # a read-only repository can still be served
            logger.warning("cannot clean up the model repository %s: %s", self.root, exc)
        records = []
        for model_dir in self._children(self.root, "model_id"):
            record = self._load_model(model_dir)
            if record is not None:
                records.append(record)
        return records

    def _children(self, directory: Path, kind: str) -> Iterable[Path]:
        """The valid-named subdirectories of ``directory``; symlinks are logged and skipped."""
        for entry in sorted_entries(directory):
            if not _valid_name(kind, entry.name):
                continue
            if entry.is_symlink():
                logger.warning("skipping %s: a symlink is never followed", directory / entry.name)
            elif entry.is_dir(follow_symlinks=False):
                yield directory / entry.name

    def _load_model(self, model_dir: Path) -> ModelRecord | None:
        model_id = model_dir.name
        try:
            self.path(model_id)
            self.recover(model_dir)
        except (OSError, StoreError) as exc:
            logger.warning("skipping stored model %s: %s", model_id, exc)
            return None
        versions = []
        for version_dir in self._children(model_dir, "version"):
            version = self._load_version(model_id, version_dir)
            if version is not None:
                versions.append(version)
        if not versions:
            return None
        path = model_dir / MODEL_FILE
        stored = os.path.lexists(path)
        state = self._load_state(path) if stored else _default_state()
        return ModelRecord(
            model_id,
            state["active"],
            state["routing"],
            state["fallback"],
            tuple(versions),
            stored=stored,
        )

    @staticmethod
    def _load_state(path: Path) -> dict[str, Any]:
        state = _default_state()
        try:
            state.update(read_json(path))
            RoutingConfig.from_dict(state["routing"])
        except (OSError, ValueError, TypeError, StoreError) as exc:
            logger.warning("ignoring the broken %s: %s", path, exc)
            return _default_state()
        return state

    def _load_version(self, model_id: str, directory: Path) -> VersionRecord | None:
        try:
            self.path(model_id, directory.name)
            self.recover(directory)
            onnx_file = read_file(directory / ONNX_FILE)
            if not os.path.lexists(directory / DEPLOYMENT_FILE):
                return VersionRecord.found_on_disk(model_id, directory.name, onnx_file)
            data = read_json(directory / DEPLOYMENT_FILE)
            sha256 = hashlib.sha256(onnx_file).hexdigest()
            if sha256 != data.get("sha256"):
                raise StoreError(f"{ONNX_FILE} does not match the checksum in {DEPLOYMENT_FILE}")
            return stored_version(model_id, directory.name, onnx_file, sha256, data)
        except (OSError, ValueError, TypeError, KeyError, StoreError) as exc:
            logger.warning("skipping the stored version %s: %s", directory, exc)
            return None


def _default_state() -> dict[str, Any]:
    return {"active": None, "routing": {"strategy": "active"}, "fallback": None}
