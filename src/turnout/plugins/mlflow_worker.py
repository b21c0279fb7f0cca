"""The background worker of the MLflow plugin: a bounded queue, one thread, retries with backoff.

Event hooks run on the server's event loop and must not wait for a tracking
server, so they only :meth:`Worker.submit` a job, which never blocks: past
the queue's bound the job is dropped and counted. One daemon thread runs
the jobs in order. A job that fails is retried after a growing delay, then
given up, each failure logged as a warning and counted; a job is never
retried out of order, because a run must exist before its events are logged.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from turnout.core.errors import InvalidConfigError

__all__ = ["Job", "RetryPolicy", "Worker", "WorkerStatistics"]

logger = logging.getLogger("turnout.plugins.mlflow")

S = TypeVar("S")


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and after how long, a failed job is tried again."""

    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise InvalidConfigError(f"max_attempts must be an integer, got {self.max_attempts!r}")
        if self.max_attempts < 1:
            raise InvalidConfigError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("initial_delay", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise InvalidConfigError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.max_delay < self.initial_delay:
            raise InvalidConfigError("max_delay must not be less than initial_delay")

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1, 2, ...)."""
        return float(min(self.max_delay, self.initial_delay * 2 ** (failures - 1)))


@dataclass(frozen=True)
class Job(Generic[S]):
    """One unit of logging: ``kind`` names it in counts and warnings; ``run(session)`` does it."""

    kind: str
    run: Callable[[S], None]


@dataclass(frozen=True)
class WorkerStatistics:
    """A frozen view of the worker's counters.

    ``pending`` jobs are queued or running; after :meth:`Worker.close` they are
    the ones that were never logged, by kind in ``unflushed``.
    """

    pending: int
    logged: int
    failed: int
    dropped: int
    retries: int
    unflushed: tuple[tuple[str, int], ...] = ()


_STOP: Any = object()


class Worker(Generic[S]):
    """Runs submitted jobs in order on one daemon thread, with a session made on first use.

    ``connect()`` makes the session (a client) in the worker thread; if it
    fails, the job that needed it fails and is retried. ``tick`` is called
    in the worker thread about every ``tick_interval`` seconds while it is idle.
    """

    def __init__(
        self,
        connect: Callable[[], S],
        *,
        capacity: int,
        retry: RetryPolicy,
        tick: Callable[[], None] | None = None,
        tick_interval: float | None = None,
        name: str = "turnout-mlflow",
    ) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise InvalidConfigError(f"capacity must be a positive integer, got {capacity!r}")
        self._connect = connect
        self._capacity = capacity
        self._retry = retry
        self._tick = tick
        self._tick_interval = tick_interval
        self._session: S | None = None
        self._jobs: queue.SimpleQueue[Job[S]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._logged = self._failed = self._dropped = self._retries = 0
        self._closed = False
        # Set when close() gives up waiting: backoff waits end at once and the
        # jobs still queued are left unlogged, to be reported.
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Job[S]) -> bool:
        """Queue ``job`` without blocking; False if the queue is full or the worker closed."""
        with self._lock:
            if self._closed or self._pending.total() >= self._capacity:
                self._dropped += 1
                dropped = self._dropped
                accepted = False
            else:
                self._pending[job.kind] += 1
                accepted = True
        if accepted:
            self._jobs.put(job)
        elif dropped == 1 or dropped % 1000 == 0:
            # Logged on the first drop and then every thousandth: a tracking
            # server that is down for long must not flood the log from the loop.
            logger.warning(
                "MLflow logging queue is full or closed; %d record(s) dropped so far", dropped
            )
        return accepted

    def statistics(self) -> WorkerStatistics:
        """Return the worker's counters now."""
        with self._lock:
            return WorkerStatistics(
                pending=self._pending.total(),
                logged=self._logged,
                failed=self._failed,
                dropped=self._dropped,
                retries=self._retries,
                unflushed=tuple(sorted((k, n) for k, n in self._pending.items() if n)),
            )

    def close(self, timeout: float) -> WorkerStatistics:
        """Log what is queued, waiting at most ``timeout`` seconds; report what was not logged."""
        with self._lock:
            already = self._closed
            self._closed = True
        if not already:
            self._jobs.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abort.set()
            # A job inside a slow MLflow call cannot be interrupted: the thread
            # is a daemon, and its job is reported as not logged.
            self._thread.join(min(1.0, timeout))
        stats = self.statistics()
        if stats.pending:
            kinds = ", ".join(f"{n} {kind}" for kind, n in stats.unflushed)
            logger.warning(
                "MLflow: %d record(s) were not logged before shutdown (%s)", stats.pending, kinds
            )
        return stats

    def _serve(self) -> None:
        next_tick = self._next_tick()
        while not self._abort.is_set():
            wait = None if next_tick is None else max(0.0, next_tick - time.monotonic())
            try:
                job = self._jobs.get(timeout=wait)
            except queue.Empty:
                job = None
            if job is _STOP:
                return
            if job is not None:
                self._run(job)
            if next_tick is not None and time.monotonic() >= next_tick:
                self._call_tick()
                next_tick = self._next_tick()

    def _next_tick(self) -> float | None:
        if self._tick is None or self._tick_interval is None:
            return None
        return time.monotonic() + self._tick_interval

    def _call_tick(self) -> None:
        assert self._tick is not None
        try:
            self._tick()
        except Exception:
            logger.exception("MLflow plugin: the metrics timer failed")

    def _run(self, job: Job[S]) -> None:
        failures = 0
        while True:
            if self._abort.is_set():
                return  # stays pending: reported as not logged
            try:
                if self._session is None:
                    self._session = self._connect()
                job.run(self._session)
            except Exception as exc:
                failures += 1
                if failures >= self._retry.max_attempts:
                    logger.warning(
                        "MLflow: giving up on a %s record after %d attempt(s): %s",
                        job.kind,
                        failures,
                        _short(exc),
                    )
                    self._finish(job, logged=False)
                    return
                delay = self._retry.delay(failures)
                logger.warning(
                    "MLflow: logging a %s record failed (%s); retry %d in %.3g s",
                    job.kind,
                    _short(exc),
                    failures,
                    delay,
                )
                with self._lock:
                    self._retries += 1
                self._abort.wait(delay)
            else:
                self._finish(job, logged=True)
                return

    def _finish(self, job: Job[S], *, logged: bool) -> None:
        with self._lock:
            self._pending[job.kind] -= 1
            if logged:
                self._logged += 1
            else:
                self._failed += 1


def _short(exc: BaseException) -> str:
    """The first line of an exception, bounded: MLflow's messages can carry whole responses."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    detail = f"{type(exc).__name__}: {first}"
    return detail if len(detail) <= 300 else detail[:300] + " ..."
