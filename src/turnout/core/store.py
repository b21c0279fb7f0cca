"""A model repository on disk: deployed versions as ONNX, and each model's routing state.

Layout::

    <dir>/<model_id>/model.json                      active version, routing, fallback
    <dir>/<model_id>/<version>/model.onnx            the servable model (never a pickle)
    <dir>/<model_id>/<version>/deployment.json       the deployment's options

Every file is written atomically (temp file, fsync, ``os.replace``, fsync of
the directory), so a crash leaves the old content or the new. Removals rename
the directory to a hidden name first, which :meth:`ModelStore.load` ignores.
The methods here block on the disk: the server calls them in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from turnout.core.batching import BatchingConfig
from turnout.core.breaker import BreakerConfig
from turnout.core.errors import InvalidConfigError, InvalidNameError, StoreError, TurnoutError
from turnout.core.fallback import Fallback
from turnout.core.names import check_name
from turnout.core.registry import Deployment
from turnout.core.routing import RoutingConfig

__all__ = [
    "ModelRecord",
    "ModelStore",
    "StoreWriter",
    "VersionRecord",
    "atomic_write",
    "check_storable",
    "fallback_from_dict",
    "fallback_to_dict",
    "restore_fallback",
    "version_record",
]

logger = logging.getLogger("turnout")

MODEL_FILE = "model.json"
ONNX_FILE = "model.onnx"
DEPLOYMENT_FILE = "deployment.json"


@dataclass(frozen=True)
class VersionRecord:
    """One stored version: its ONNX bytes and the options it was deployed with."""

    model_id: str
    version: str
    onnx_bytes: bytes
    metadata: Mapping[str, Any]
    features: tuple[str, ...] | None
    output: str
    batching: Mapping[str, Any]
    allow_nan: bool
    error_threshold: float
    breaker: Mapping[str, Any]
    deployed_at: str
    source: str

    def restore_identity(self, deployment: Deployment) -> None:
        """Give a redeployed version its original source and deployment time."""
        deployment.loaded = replace(deployment.loaded, source=self.source)
        with contextlib.suppress(ValueError):
            deployment.deployed_at = datetime.fromisoformat(self.deployed_at)

    def options(self) -> dict[str, Any]:
        """Return the ``deploy_model`` keyword arguments that redeploy this version."""
        return {
            "metadata": dict(self.metadata),
            "features": list(self.features) if self.features is not None else None,
            "output": self.output,
            "batching": BatchingConfig(**self.batching),
            "allow_nan": self.allow_nan,
            "error_threshold": self.error_threshold,
            "breaker": BreakerConfig(**self.breaker),
        }


@dataclass(frozen=True)
class ModelRecord:
    """One stored model: active version, routing and fallback (as plain data), versions."""

    model_id: str
    active: str | None
    routing: Mapping[str, Any]
    fallback: Mapping[str, Any] | None
    versions: tuple[VersionRecord, ...] = ()


# -- mapping between live objects and records --------------------------------------------


def version_record(deployment: Deployment) -> VersionRecord:
    """Return the record that stores ``deployment``; raise StoreError if it has no ONNX."""
    onnx_bytes = deployment.loaded.onnx_bytes
    if onnx_bytes is None:
        raise StoreError(f"{deployment.model_id}:{deployment.version} has no ONNX form to store")
    names = deployment.schema.feature_names
    return VersionRecord(
        model_id=deployment.model_id,
        version=deployment.version,
        onnx_bytes=onnx_bytes,
        metadata=dict(deployment.metadata),
        features=tuple(names) if names is not None else None,
        output=deployment.decoder.mode.value,
        batching=asdict(deployment.batcher.config),
        allow_nan=deployment.schema.allow_nan,
        error_threshold=deployment.error_threshold,
        breaker=breaker_to_dict(deployment.breaker.config),
        deployed_at=deployment.deployed_at.isoformat(),
        source=deployment.loaded.source,
    )


def breaker_to_dict(config: BreakerConfig) -> dict[str, Any]:
    """Return a BreakerConfig as plain data (``asdict`` cannot copy its read-only params)."""
    data = {f.name: getattr(config, f.name) for f in fields(config)}
    data["params"] = dict(config.params)
    return data


def fallback_to_dict(fallback: Fallback | None) -> dict[str, Any] | None:
    """Return a Fallback as plain data, or None."""
    if fallback is None:
        return None
    if fallback.version is not None:
        return {"version": fallback.version}
    return {"value": np.asarray(fallback.value, dtype=np.float64).tolist()}


def fallback_from_dict(data: Mapping[str, Any] | None) -> Fallback | None:
    """Build a Fallback from :func:`fallback_to_dict` output."""
    if data is None:
        return None
    return Fallback(version=data.get("version"), value=data.get("value"))


def restore_fallback(record: ModelRecord, versions: Mapping[str, object]) -> Fallback | None:
    """Return the stored fallback if it still fits the model's versions, else log and drop it."""
    try:
        fallback = fallback_from_dict(record.fallback)
    except (TurnoutError, AttributeError, TypeError) as exc:
        logger.warning("stored fallback of %s is refused (%s); dropped", record.model_id, exc)
        return None
    if fallback is not None and fallback.version is not None and fallback.version not in versions:
        logger.warning(
            "stored fallback %s of %s is gone; dropped", fallback.version, record.model_id
        )
        return None
    return fallback


def check_storable(metadata: Mapping[str, Any], breaker: BreakerConfig) -> None:
    """Raise InvalidConfigError unless metadata and breaker params are plain JSON data."""
    for what, value in (("metadata", metadata), ("breaker params", breaker.params)):
        try:
            json.dumps(dict(value), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(
                f"{what} must be plain JSON data to be stored: {exc}"
            ) from None


# -- atomic files -----------------------------------------------------------------------


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves the old content or the new."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def _dump(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, allow_nan=False).encode()


class ModelStore:
    """The repository directory: writes are atomic, reads skip what is broken."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.root = Path(directory).resolve()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the model repository {self.root}: {exc}") from exc

    def path(self, model_id: str, version: str | None = None) -> Path:
        """Return the directory of a model or version; refuse one outside the repository."""
        parts = [check_name("model_id", model_id)]
        if version is not None:
            parts.append(check_name("version", version))
        path = self.root.joinpath(*parts)
        # A symlink on the way could lead anywhere: the resolved path must be the plain one.
        if path.resolve() != path or not path.is_relative_to(self.root):
            raise StoreError(f"{path} leads outside the model repository {self.root}")
        return path

    # -- writes --

    def save_version(self, record: VersionRecord) -> None:
        """Store one version: its ONNX bytes, then its options (which name their checksum)."""
        directory = self._make(record.model_id, record.version)
        atomic_write(directory / ONNX_FILE, record.onnx_bytes)
        data = {
            "metadata": dict(record.metadata),
            "features": list(record.features) if record.features is not None else None,
            "output": record.output,
            "batching": dict(record.batching),
            "allow_nan": record.allow_nan,
            "error_threshold": record.error_threshold,
            "breaker": dict(record.breaker),
            "deployed_at": record.deployed_at,
            "source": record.source,
            "sha256": hashlib.sha256(record.onnx_bytes).hexdigest(),
        }
        atomic_write(directory / DEPLOYMENT_FILE, _dump(data))

    def save_model(self, record: ModelRecord) -> None:
        """Store a model's active version, routing and fallback."""
        directory = self._make(record.model_id)
        data = {
            "active": record.active,
            "routing": dict(record.routing),
            "fallback": dict(record.fallback) if record.fallback is not None else None,
        }
        atomic_write(directory / MODEL_FILE, _dump(data))

    def delete_version(self, model_id: str, version: str) -> None:
        """Remove a stored version (a no-op if it is not stored)."""
        self._remove(self.path(model_id, version))

    def delete_model(self, model_id: str) -> None:
        """Remove a model and every stored version of it."""
        self._remove(self.path(model_id))

    def _make(self, model_id: str, version: str | None = None) -> Path:
        model_dir = self.path(model_id)
        if not model_dir.is_dir():
            model_dir.mkdir()
            fsync_directory(self.root)
        if version is None:
            return model_dir
        version_dir = self.path(model_id, version)
        if not version_dir.is_dir():
            version_dir.mkdir()
            fsync_directory(model_dir)
        return version_dir

    @staticmethod
    def _remove(path: Path) -> None:
        if not path.exists():
            return
        # A hidden name is never a valid id, so load() ignores it from the rename on.
        doomed = path.with_name(f".{path.name}.{uuid.uuid4().hex}.deleted")
        os.replace(path, doomed)
        fsync_directory(path.parent)
        shutil.rmtree(doomed, ignore_errors=True)

    # -- reads --

    def load(self) -> list[ModelRecord]:
        """Return every stored model; entries that are broken are logged and skipped."""
        records = []
        for model_dir in sorted(self.root.iterdir()):
            if not _valid_name(model_dir.name) or not model_dir.is_dir():
                continue
            record = self._load_model(model_dir)
            if record is not None:
                records.append(record)
        return records

    def _load_model(self, model_dir: Path) -> ModelRecord | None:
        model_id = model_dir.name
        try:
            self.path(model_id)
        except StoreError as exc:
            logger.warning("skipping stored model %s: %s", model_id, exc)
            return None
        versions = []
        for version_dir in sorted(model_dir.iterdir()):
            if _valid_name(version_dir.name) and version_dir.is_dir():
                version = self._load_version(model_id, version_dir)
                if version is not None:
                    versions.append(version)
        state: dict[str, Any] = {"active": None, "routing": {"strategy": "active"}}
        state["fallback"] = None
        path = model_dir / MODEL_FILE
        if path.exists():
            try:
                state.update(_read_json(path))
                RoutingConfig.from_dict(state["routing"])
            except (OSError, ValueError, TypeError) as exc:
                logger.warning("ignoring the broken %s: %s", path, exc)
                state = {"active": None, "routing": {"strategy": "active"}, "fallback": None}
        if not versions:
            return None
        return ModelRecord(
            model_id, state["active"], state["routing"], state["fallback"], tuple(versions)
        )

    def _load_version(self, model_id: str, directory: Path) -> VersionRecord | None:
        try:
            self.path(model_id, directory.name)
            data = _read_json(directory / DEPLOYMENT_FILE)
            onnx_bytes = (directory / ONNX_FILE).read_bytes()
            if hashlib.sha256(onnx_bytes).hexdigest() != data.get("sha256"):
                raise StoreError(f"{ONNX_FILE} does not match the checksum in {DEPLOYMENT_FILE}")
            features = data["features"]
            return VersionRecord(
                model_id=model_id,
                version=directory.name,
                onnx_bytes=onnx_bytes,
                metadata=dict(data["metadata"]),
                features=tuple(features) if features is not None else None,
                output=str(data["output"]),
                batching=dict(data["batching"]),
                allow_nan=bool(data["allow_nan"]),
                error_threshold=float(data["error_threshold"]),
                breaker=dict(data["breaker"]),
                deployed_at=str(data["deployed_at"]),
                source=str(data["source"]),
            )
        except (OSError, ValueError, TypeError, KeyError, StoreError) as exc:
            logger.warning("skipping the stored version %s: %s", directory, exc)
            return None


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_bytes())
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} does not hold a JSON object")
    return data


def _valid_name(name: str) -> bool:
    try:
        check_name("name", name)
    except InvalidNameError:
        return False
    return True


# -- writing from the event loop ----------------------------------------------------------

WritePlan = Callable[[], Callable[[], None] | None]


class StoreWriter:
    """Queues a server's changes and writes them to a ModelStore in a thread, in order.

    A model's state is read when its write runs, not when it was queued, so a
    burst of changes to one model costs one write. Disabled (every call a
    no-op) until the server has restored what the store holds.
    """

    def __init__(self, store: ModelStore, state: Callable[[str], ModelRecord | None]) -> None:
        self.store = store
        self.enabled = False
        self._state = state
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._dirty: set[str] = set()

    async def load(self) -> list[ModelRecord]:
        """Read every stored model, in a thread."""
        return await anyio.to_thread.run_sync(self.store.load)

    def save_version(self, deployment: Deployment) -> None:
        """Queue storing a deployed version and its model's state."""
        if self.enabled:
            write = partial(self.store.save_version, version_record(deployment))
            self._queue(lambda: write)
            self.model_changed(deployment.model_id)

    def delete_version(self, model_id: str, version: str) -> None:
        """Queue removing a retired version and storing its model's state."""
        if self.enabled:
            self._queue(lambda: partial(self.store.delete_version, model_id, version))
            self.model_changed(model_id)

    def model_changed(self, model_id: str) -> None:
        """Queue storing the model's state (or removing it, once it has no versions)."""
        if self.enabled:
            self._dirty.add(model_id)
            self._queue(partial(self._model_write, model_id))

    def _model_write(self, model_id: str) -> Callable[[], None] | None:
        if model_id not in self._dirty:
            return None  # an earlier write stored the latest state already
        self._dirty.discard(model_id)
        record = self._state(model_id)
        if record is None:
            return partial(self.store.delete_model, model_id)
        return partial(self.store.save_model, record)

    def _queue(self, plan: WritePlan) -> None:
        task = asyncio.ensure_future(self._run(plan))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Retrieved here so a failure nobody awaits is not reported again at exit: it was logged.
        task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _run(self, plan: WritePlan) -> None:
        async with self._lock:  # FIFO: writes land in the order they were queued
            write = plan()  # on the loop: reads the live state
            if write is None:
                return
            try:
                await anyio.to_thread.run_sync(write)
            except OSError as exc:
                logger.error("cannot write the model repository: %s", exc)
                raise StoreError(f"cannot write the model repository: {exc}") from exc

    async def flush(self) -> None:
        """Wait for every queued write; raise the first failure as StoreError."""
        if self._tasks:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    async def close(self) -> None:
        """Wait for every queued write; failures were logged when they happened."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
