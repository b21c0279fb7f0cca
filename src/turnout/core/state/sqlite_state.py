"""SQLiteState: the control state in one SQLite file, shared by the processes of one host.

The embedded default for ``turnout serve --workers N`` without ``--state``:
zero extra services, only a file beside the repository. The database runs
in WAL mode, so readers never wait for the writer; a write is one
``BEGIN IMMEDIATE`` transaction that compares the model's revision, stores
the state and appends to a change log, so compare-and-set is atomic across
processes. Outcome totals are updated in SQL (``count = count + 1``), never
read, changed and written back from Python.

The change feed polls ``PRAGMA data_version``, which changes when another
connection commits and costs no lock (https://sqlite.org/pragma.html#pragma_data_version),
every 5 to 20 milliseconds; when it moved, or this handle wrote, it reads the
change log past the last entry it announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio

from turnout.core.errors import InvalidConfigError, StateUnavailableError
from turnout.core.routing.outcomes import OutcomeTotals
from turnout.core.state.control import (
    EVERY_MODEL,
    OUTCOME_ID_SECONDS,
    ChangeListener,
    Fence,
    ModelState,
    fenced_out,
    stale_revision,
)
from turnout.core.state.control_codec import decode_state, encode_state
from turnout.core.state.pending import stop_task

__all__ = ["POLL_IDLE_SECONDS", "POLL_SECONDS", "SQLiteState"]

logger = logging.getLogger("turnout")

T = TypeVar("T")

# How often the change feed looks for other processes' commits: every 5 ms after a
# commit, backing off to every 20 ms while none comes (an idle worker woke 200 times a
# second, ~3.5% of a core; the first change after a quiet spell waits at most 20 ms).
POLL_SECONDS = 0.005
POLL_IDLE_SECONDS = 0.02
# Change-log entries kept; older ones are pruned (a subscriber that fell further
# behind re-reads every model).
CHANGES_KEPT = 10_000
# How long a write waits for another process's write to end before it is refused.
BUSY_SECONDS = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    body TEXT NOT NULL,
    present INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outcomes (
    model_id TEXT NOT NULL,
    version TEXT NOT NULL,
    count INTEGER NOT NULL,
    shift REAL NOT NULL,
    total REAL NOT NULL,
    squares REAL NOT NULL,
    non_binary INTEGER NOT NULL,
    PRIMARY KEY (model_id, version)
);
CREATE TABLE IF NOT EXISTS outcome_ids (
    model_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (model_id, request_id)
);
CREATE INDEX IF NOT EXISTS outcome_ids_expiry ON outcome_ids (expires);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS heartbeats (
    process TEXT PRIMARY KEY,
    facts TEXT NOT NULL,
    until REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    model_id TEXT NOT NULL,
    revision INTEGER NOT NULL
);
"""


def _live_token(db: sqlite3.Connection, name: str) -> int | None:
    row = db.execute(
        "SELECT token FROM leases WHERE name = ? AND expires > ?", (name, time.time())
    ).fetchone()
    return None if row is None else int(row[0])


class SQLiteState:
    """Control state in a SQLite file (WAL): compare-and-set in a transaction, a polled feed."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            # The feed's own connection, used only on the event loop: sharing the other
            # would make the loop wait for its lock, which a write holds for as long as
            # another process keeps the database locked (BUSY_SECONDS), and every
            # request this process serves would stall with it.
            self._feed_db = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise InvalidConfigError(f"cannot open the control state {self.path}: {exc}") from exc
        # Used from worker threads, one at a time: the lock keeps them apart.
        self._lock = threading.Lock()
        self._listeners: list[ChangeListener] = []
        self._feed: asyncio.Task[None] | None = None
        self._wrote = False
        self._seen = 0
        self._outage = False

    # -- reads and writes, each in a thread -------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._db)

        try:
            result = await anyio.to_thread.run_sync(locked)
        except sqlite3.OperationalError as exc:  # "database is locked", a lost disk
            if not self._outage:
                logger.warning("the control state %s is unavailable: %s", self.path, exc)
                self._outage = True
            raise StateUnavailableError(
                f"the control state {self.path} is unavailable: {exc}"
            ) from exc
        if self._outage:
            logger.info("the control state %s is available again", self.path)
            self._outage = False
        return result

    async def read(self, model_id: str) -> ModelState:
        """Return the model's state; revision 0 and no versions if it was never written."""

        def work(db: sqlite3.Connection) -> Any:
            query = "SELECT revision, body FROM models WHERE model_id = ?"
            return db.execute(query, (model_id,)).fetchone()

        row = await self._run(work)
        return ModelState(model_id) if row is None else decode_state(model_id, row[0], row[1])

    async def model_ids(self) -> list[str]:
        """Return every model that has a deployed version, sorted."""

        def work(db: sqlite3.Connection) -> list[str]:
            rows = db.execute("SELECT model_id FROM models WHERE present ORDER BY model_id")
            return [row[0] for row in rows]

        return await self._run(work)

    async def write(self, state: ModelState, *, fence: Fence | None = None) -> ModelState:
        """Store ``state`` if the model is still at ``state.revision``; return it at the next."""
        try:
            body = encode_state(state)
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(
                f"the state of {state.model_id!r} is not plain data: {exc}"
            ) from exc
        model_id = state.model_id

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            db.execute("BEGIN IMMEDIATE")
            try:
                if fence is not None and _live_token(db, fence[0]) != fence[1]:
                    db.execute("ROLLBACK")
                    return 2, 0
                row = db.execute(
                    "SELECT revision FROM models WHERE model_id = ?", (model_id,)
                ).fetchone()
                stored = 0 if row is None else int(row[0])
                if stored != state.revision:
                    db.execute("ROLLBACK")
                    return 0, stored
                revision = stored + 1
                db.execute(
                    "INSERT INTO models (model_id, revision, body, present) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (model_id) DO UPDATE SET revision = excluded.revision,"
                    " body = excluded.body, present = excluded.present",
                    (model_id, revision, body, int(state.exists)),
                )
                if not state.exists:
                    db.execute("DELETE FROM outcomes WHERE model_id = ?", (model_id,))
                cursor = db.execute(
                    "INSERT INTO changes (model_id, revision) VALUES (?, ?)", (model_id, revision)
                )
                seq = int(cursor.lastrowid or 0)
                db.execute("DELETE FROM changes WHERE seq <= ?", (seq - CHANGES_KEPT,))
                db.execute("COMMIT")
                return 1, revision
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

        written, revision = await self._run(work)
        if written == 2:
            assert fence is not None
            raise fenced_out(model_id, fence)
        if not written:
            raise stale_revision(state, int(revision))
        self._wrote = True  # this connection's commits do not move its data_version
        return state.changed(revision=revision)

    async def hold_lease(self, name: str, holder: str, seconds: float) -> int | None:
        """Take or renew lease ``name`` for ``holder``; return its token (None: held by another)."""

        def work(db: sqlite3.Connection) -> int | None:
            now = time.time()  # the processes of one host share its wall clock
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT holder, token, expires FROM leases WHERE name = ?", (name,)
                ).fetchone()
                if row is not None and row[0] != holder and row[2] > now:
                    db.execute("ROLLBACK")
                    return None
                token = 1 if row is None else int(row[1]) + (row[0] != holder)
                db.execute(
                    "INSERT INTO leases VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                    " holder = excluded.holder, token = excluded.token, expires = excluded.expires",
                    (name, holder, token, now + seconds),
                )
                db.execute("COMMIT")
                return token
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

        return await self._run(work)

    async def add_outcome(
        self, model_id: str, version: str, value: float, *, once: str | None = None
    ) -> OutcomeTotals | None:
        """Add one outcome to the version's aggregates, atomically; return the new totals.

        None, and nothing added, if ``once`` already took an outcome.
        """
        value = float(value)
        non_binary = int(value not in (0.0, 1.0))

        def work(db: sqlite3.Connection) -> Any:
            db.execute("BEGIN IMMEDIATE")
            try:
                if once is not None:
                    now = time.time()
                    db.execute("DELETE FROM outcome_ids WHERE expires <= ?", (now,))
                    taken = db.execute(
                        "INSERT OR IGNORE INTO outcome_ids VALUES (?, ?, ?)",
                        (model_id, once, now + OUTCOME_ID_SECONDS),
                    )
                    if taken.rowcount == 0:
                        db.execute("COMMIT")
                        return None
                # The first outcome of a version sets its shift; every later one uses it.
                db.execute(
                    "INSERT OR IGNORE INTO outcomes VALUES (?, ?, 0, ?, 0.0, 0.0, 0)",
                    (model_id, version, value),
                )
                db.execute(
                    "UPDATE outcomes SET count = count + 1, total = total + (? - shift),"
                    " squares = squares + (? - shift) * (? - shift),"
                    " non_binary = non_binary + ? WHERE model_id = ? AND version = ?",
                    (value, value, value, non_binary, model_id, version),
                )
                row = db.execute(
                    "SELECT count, shift, total, squares, non_binary FROM outcomes"
                    " WHERE model_id = ? AND version = ?",
                    (model_id, version),
                ).fetchone()
                db.execute("COMMIT")
                return row
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise

        row = await self._run(work)
        return None if row is None else OutcomeTotals(*row)

    async def outcomes(self, model_id: str) -> dict[str, OutcomeTotals]:
        """Return the model's outcome aggregates per version."""

        def work(db: sqlite3.Connection) -> list[Any]:
            query = (
                "SELECT version, count, shift, total, squares, non_binary FROM outcomes"
                " WHERE model_id = ?"
            )
            return db.execute(query, (model_id,)).fetchall()

        return {row[0]: OutcomeTotals(*row[1:]) for row in await self._run(work)}

    async def heartbeat(self, process: str, facts: Mapping[str, Any], seconds: float) -> None:
        """Say that ``process`` lives, with ``facts``, for the next ``seconds``."""
        now = time.time()
        body = json.dumps({**facts, "at": now})

        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO heartbeats VALUES (?, ?, ?) ON CONFLICT (process) DO UPDATE SET"
                " facts = excluded.facts, until = excluded.until",
                (process, body, now + seconds),
            )

        await self._run(work)

    async def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Return each live process's last facts, with ``"at"``; forget the dead ones."""
        now = time.time()

        def work(db: sqlite3.Connection) -> list[Any]:
            db.execute("DELETE FROM heartbeats WHERE until <= ?", (now,))
            return db.execute("SELECT process, facts FROM heartbeats").fetchall()

        return {process: json.loads(facts) for process, facts in await self._run(work)}

    # -- the change feed ---------------------------------------------------------------------

    async def subscribe(self, listener: ChangeListener) -> Callable[[], None]:
        """Call ``listener(model_id, revision)`` after each write; return once subscribed."""
        if self._feed is None:
            self._seen = await self._run(
                lambda db: int(
                    db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()[0]
                )
            )
            self._feed = asyncio.get_running_loop().create_task(self._poll())
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def _poll(self) -> None:
        version = self._data_version()
        pause = POLL_SECONDS
        while True:
            await asyncio.sleep(pause)
            now = self._data_version()
            if now == version and not self._wrote:
                pause = min(pause * 2, POLL_IDLE_SECONDS)
                continue
            version, self._wrote, pause = now, False, POLL_SECONDS
            try:
                await self._announce_new()
            except StateUnavailableError:
                self._wrote = True  # try again on the next turn

    def _data_version(self) -> int:
        # On the loop, on the feed's connection: the pragma takes no lock and costs
        # microseconds. It moves with this process's own commits too (they come from
        # the other connection), which only costs a read of the change log.
        try:
            return int(self._feed_db.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return -1

    async def _announce_new(self) -> None:
        seen = self._seen

        def work(db: sqlite3.Connection) -> tuple[int, list[Any]]:
            oldest = db.execute("SELECT COALESCE(MIN(seq), 0) FROM changes").fetchone()[0]
            rows = db.execute(
                "SELECT seq, model_id, revision FROM changes WHERE seq > ? ORDER BY seq", (seen,)
            ).fetchall()
            return int(oldest), rows

        oldest, rows = await self._run(work)
        changes = [(model_id, revision) for _, model_id, revision in rows]
        if seen and oldest > seen + 1:
            changes = [(EVERY_MODEL, 0)]  # pruned past what this feed announced
        if rows:
            self._seen = max(self._seen, rows[-1][0])
        for model_id, revision in changes:
            for listener in list(self._listeners):
                listener(model_id, revision)

    async def close(self) -> None:
        """Stop the change feed (cancelled until it ends) and close the database connection."""
        self._listeners.clear()
        if self._feed is not None:
            await stop_task(self._feed, f"the control-state feed of {self.path}")
            self._feed = None
        self._feed_db.close()
        with self._lock:
            self._db.close()
