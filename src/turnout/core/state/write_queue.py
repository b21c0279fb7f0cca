"""Writing a server's changes to its model repository: in order, in a thread, never ahead.

:class:`StoreWriter` is the event loop's side of :mod:`turnout.core.state.repository`:
it queues each change when it happens and writes it when its turn comes, so
that model.json never names a version a crash could lose.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from functools import partial

import anyio

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import RepositoryInUseError, StoreError
from turnout.core.state.pending import PendingWrites
from turnout.core.state.repository import ModelStore
from turnout.core.state.repository_records import ModelRecord, VersionRecord, version_record

__all__ = ["StoreWriter"]

logger = logging.getLogger("turnout")

# -- writing from the event loop ----------------------------------------------------------

Write = Callable[[], None]
WritePlan = Callable[[], Write | None]


class StoreWriter:
    """Queues a server's changes and writes them to a ModelStore in a thread, in order.

    A model's state is snapshotted each time it changes, and written when
    its turn comes: the newest state that names only versions already stored
    (the live one if it does, so a burst of changes costs few writes). A
    version's own write is queued the moment it is deployed, before any state
    that names it, so model.json never names a version a crash could lose.
    Disabled (every call a no-op) until the server has restored what the
    store holds.

    With ``shared`` (the server shares its control state with others), a
    repository another server holds is no error: this writer stands by,
    reads it without writing, and takes the lock over (:meth:`take_over`)
    once its holder is gone. One server of a fleet writes the repository,
    however many are given it.
    """

    def __init__(
        self,
        store: ModelStore,
        state: Callable[[str], ModelRecord | None],
        *,
        shared: bool = False,
    ) -> None:
        self.store = store
        self.enabled = False
        self.standby = False
        self._shared = shared
        self._state = state
        self._lock = asyncio.Lock()
        self._tasks = PendingWrites()
        self._clock = itertools.count(1)
        # Per model: the versions stored on disk, the states queued but not yet
        # written (oldest first, with the clock reading when each was taken), and
        # the reading of the state written last.
        self._stored: dict[str, set[str]] = {}
        self._pending: dict[str, list[tuple[int, ModelRecord | None]]] = {}
        self._written: dict[str, int] = {}

    @property
    def read_only(self) -> bool:
        """True if the store refuses writes (it was opened to look, not to serve)."""
        return self.store.read_only

    async def load(self) -> list[ModelRecord]:
        """Lock the repository (unless read-only) and read every stored model, in a thread."""
        records = await anyio.to_thread.run_sync(self._lock_and_load)
        for record in records:
            self._stored[record.model_id] = {v.version for v in record.versions}
        return records

    def _lock_and_load(self) -> list[ModelRecord]:
        try:
            self.store.lock()
        except RepositoryInUseError:
            if not self._shared:
                raise
            # Read as a read-only store reads: no repairs in a directory another writes.
            self.standby = self.store.read_only = True
            logger.info(
                "the model repository %s is written by another server sharing the control"
                " state; this one stands by to take over",
                self.store.root,
            )
        try:
            return self.store.load()
        except BaseException:
            self.store.close()
            raise

    async def take_over(self) -> list[ModelRecord] | None:
        """Take the lock of a repository this writer stands by for, if it is free now.

        Returns what the repository holds once this writer holds it (the
        server then writes what differs from its view), None while another
        server still holds it or when this writer is not standing by.
        """
        if not self.standby:
            return None

        def attempt() -> list[ModelRecord] | None:
            self.store.read_only = False
            try:
                self.store.lock()
                return self.store.load()
            except StoreError:
                self.store.close()
                self.store.read_only = True
                return None

        async with self._lock:
            records = await anyio.to_thread.run_sync(attempt)
            if records is None:
                return None
            self.standby = False
            self._stored = {r.model_id: {v.version for v in r.versions} for r in records}
            self._pending.clear()
        logger.info("this server now writes the model repository %s", self.store.root)
        return records

    def stored_versions(self, model_id: str) -> set[str]:
        """The versions of the model the repository holds, as far as this writer knows."""
        return set(self._stored.get(model_id, ()))

    def save_version(self, deployment: Deployment) -> None:
        """Queue storing a deployed version and its model's state."""
        if self.enabled and not self.standby:
            record = version_record(deployment)
            self._queue(lambda: partial(self._save_version, record))
            self.model_changed(deployment.model_id)

    def _save_version(self, record: VersionRecord) -> None:
        self.store.save_version(record)
        # In the write's thread, but under the writer's lock, which every reader holds.
        self._stored.setdefault(record.model_id, set()).add(record.version)

    def record_found(self, deployment: Deployment, sha256: str) -> None:
        """Queue writing the deployment.json of a version found as a bare model.onnx."""
        if self.enabled and not self.standby:
            write = partial(self.store.save_found, version_record(deployment), sha256)
            self._queue(lambda: write)

    def delete_version(self, model_id: str, version: str) -> None:
        """Queue removing a retired version and storing its model's state."""
        if self.enabled and not self.standby:
            self._queue(partial(self._delete_version, model_id, version))
            self.model_changed(model_id)

    def _delete_version(self, model_id: str, version: str) -> Write:
        # Not stored from the moment its removal starts: no state may name it after.
        self._stored.get(model_id, set()).discard(version)
        return partial(self.store.delete_version, model_id, version)

    def model_changed(self, model_id: str) -> None:
        """Queue storing the model's state (or removing it, once it has no versions)."""
        if self.enabled and not self.standby:
            taken = next(self._clock)
            self._pending.setdefault(model_id, []).append((taken, self._state(model_id)))
            self._queue(partial(self._model_write, model_id, taken))

    def _model_write(self, model_id: str, taken: int) -> Write | None:
        """The write of the newest state, no older than the one taken at ``taken``, to store."""
        if self._written.get(model_id, 0) >= taken:
            return None  # a write of a later state ran already
        pending = self._pending.get(model_id, [])
        live = (next(self._clock), self._state(model_id))
        candidates = [live, *reversed([p for p in pending if p[0] >= taken])]
        chosen = next((c for c in candidates if not self._unstored(model_id, c[1])), None)
        written = taken if chosen is None else chosen[0]
        self._pending[model_id] = [p for p in pending if p[0] > written]
        if chosen is None:
            # Only when a version's own write failed: storing the state would lose it.
            missing = ", ".join(sorted(self._unstored(model_id, live[1])))
            message = f"cannot store the state of {model_id}: {missing} failed to be written"
            logger.error("%s", message)
            raise StoreError(message)
        self._written[model_id] = written
        record = chosen[1]
        if record is None:
            self._stored.pop(model_id, None)
            return partial(self.store.delete_model, model_id)
        return partial(self.store.save_model, record)

    def _unstored(self, model_id: str, record: ModelRecord | None) -> set[str]:
        if record is None:
            return set()
        return set(record.named) - self._stored.get(model_id, set())

    def _queue(self, plan: WritePlan) -> None:
        self._tasks.spawn(self._run(plan))

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
        """Wait for every queued write; raise the failure of the earliest as StoreError."""
        await self._tasks.flush()

    async def close(self) -> None:
        """Wait for every queued write (failures were logged), then release the lock."""
        await self._tasks.settle()
        self.store.close()
