"""The adaptive micro-batcher: one per deployed version.

Contract:

* A request that arrives while the model is idle runs at once, alone: no
  batching wait at low load.
* While a batch executes, arriving requests queue; when an execution slot
  frees, everything queued (up to ``max_batch_rows``) runs as the next batch.
  Batches grow with load by themselves.
* Admission is bounded: a request that would take the queue past
  ``max_queue_rows``, or whose deadline the measured cost model says cannot be
  met, is refused at once with :class:`OverloadedError`.
* A request whose deadline passes gets :class:`DeadlineExceededError` at
  that moment; if it is still queued it is dropped before it runs. A caller
  that is cancelled is dropped the same way.
* Every admitted request is answered exactly once, with its own rows' slice
  of the batch result, in order, or with an exception. :meth:`close` stops
  admission and waits for every admitted request to be answered.
* A version whose recent batches all ran short (p99 at most
  ``inline_batch_ms``) runs its batches on the event loop's thread, if its
  runtime can be stopped mid-run; a watchdog stops a run that passes
  ``inline_watchdog_ms``, and the version goes back to the worker thread
  for 1,000 batches, twice as many after each later stop
  (:mod:`turnout.core.execution.inline`).

How to stack and split arrays is this module's business; *what* to run and
how to read its output is the ``execute`` callable's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from turnout.core.clock import Clock, MonotonicClock
from turnout.core.errors import (
    DeadlineExceededError,
    InferenceError,
    InvalidConfigError,
    OverloadedError,
    ServerClosedError,
    TurnoutError,
)
from turnout.core.execution.costmodel import CostEstimate, LinearCostModel
from turnout.core.execution.inline import WATCHDOG, InlineExecution
from turnout.core.execution.schema import DEFAULT_MAX_REQUEST_ROWS
from turnout.core.execution.worker import BatchWorkers

__all__ = [
    "AdaptiveBatcher",
    "BatchReport",
    "BatchSlice",
    "BatcherStatistics",
    "BatchingConfig",
]

R = TypeVar("R")

# Batch run times a version's inline decision looks at: its p99 is the second largest.
_RUN_TIMES = 100
# Batches a version runs on the worker thread after its first stopped inline run.
_AFTER_STOP = 1000

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """How one version batches: batch and queue bounds, optional wait, parallelism.

    ``max_batch_rows=1`` turns batching off: each request runs alone.
    ``max_queue_rows`` bounds what may wait: past it requests are refused at
    once. ``max_delay_ms`` is an upper bound on a wait for more requests,
    taken only when the cost model says the wait pays for itself (0 never
    waits). ``timeout_ms`` is the deadline of a request that sets none
    (None: no deadline). ``inline_batch_ms`` is the p99 batch time under
    which a version's batches run on the event loop's thread rather than a
    worker's (0 never), and ``inline_watchdog_ms`` how long one such batch
    may hold the loop before it is stopped and sent to the worker thread.
    A batch of more than ``inline_max_requests`` requests always goes to the
    worker: so many arriving together means others are waiting on the loop,
    and a run there would hold up their reading while the worker's run lets
    them gather into the next batch.
    """

    max_batch_rows: int = 64
    max_queue_rows: int = 8192
    max_request_rows: int = DEFAULT_MAX_REQUEST_ROWS
    max_delay_ms: float = 0.0
    max_concurrent_batches: int = 1
    timeout_ms: float | None = None
    inline_batch_ms: float = 2.0
    inline_watchdog_ms: float = 100.0
    inline_max_requests: int = 2

    def __post_init__(self) -> None:
        for name in ("max_batch_rows", "max_queue_rows", "max_request_rows", "inline_max_requests"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.max_queue_rows < self.max_request_rows:
            raise InvalidConfigError(
                f"max_queue_rows ({self.max_queue_rows}) must be at least"
                f" max_request_rows ({self.max_request_rows})"
            )
        delay = self.max_delay_ms
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not (math.isfinite(delay) and 0.0 <= delay <= 1000.0)
        ):
            raise InvalidConfigError(
                f"max_delay_ms must be a number from 0 to 1000, got {self.max_delay_ms!r}"
            )
        for name, low, high in (
            ("inline_batch_ms", 0.0, 1000.0),
            ("inline_watchdog_ms", 1.0, 60_000.0),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and low <= value <= high)
            ):
                raise InvalidConfigError(
                    f"{name} must be a number from {low:g} to {high:g}, got {value!r}"
                )
        if self.inline_watchdog_ms <= self.inline_batch_ms:
            raise InvalidConfigError(
                f"inline_watchdog_ms ({self.inline_watchdog_ms}) must exceed"
                f" inline_batch_ms ({self.inline_batch_ms})"
            )
        timeout = self.timeout_ms
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not (math.isfinite(timeout) and timeout > 0)
        ):
            raise InvalidConfigError(
                f"timeout_ms must be a positive number of milliseconds or None, got {timeout!r}"
            )
        concurrency = self.max_concurrent_batches
        if (
            not isinstance(concurrency, int)
            or isinstance(concurrency, bool)
            or not 1 <= concurrency <= 64
        ):
            raise InvalidConfigError(
                "max_concurrent_batches must be an integer from 1 to 64,"
                f" got {self.max_concurrent_batches!r}"
            )


class BatchSlice(NamedTuple, Generic[R]):
    """One caller's share of a batch result: rows ``start:stop`` of ``result``."""

    result: R
    start: int
    stop: int


@dataclass(frozen=True)
class BatchReport:
    """What happened in one executed batch, reported once per batch.

    ``error`` is the batch's own failure, if it failed; ``failed_requests``
    how many requests were finally answered with an error (after bisection,
    often fewer than the batch held), and ``failed_latency`` the sum of their
    latencies; ``overran`` whether a request's deadline passed while the
    batch was executing.
    """

    rows: int
    requests: int
    latencies: tuple[float, ...]
    duration: float
    error: TurnoutError | None
    failed_requests: int = 0
    overran: bool = False
    failed_latency: float = 0.0


@dataclass(frozen=True)
class BatcherStatistics:
    """A frozen view of a batcher's state; ``inline``: batches run on the loop's thread now."""

    queued_requests: int
    queued_rows: int
    batches_in_flight: int
    shed: int
    timeouts: int
    closing: bool
    cost: CostEstimate
    oldest_batch_seconds: float = 0.0
    inline: bool = False


class _Pending:
    __slots__ = (
        "deadline",
        "future",
        "launches",
        "queued",
        "rows",
        "size",
        "started",
        "timer",
        "token",
    )

    def __init__(
        self,
        rows: np.ndarray[Any, Any],
        future: asyncio.Future[Any],
        started: float,
        deadline: float | None,
    ) -> None:
        self.rows = rows
        self.size = len(rows)
        self.future = future
        self.started = started
        self.deadline = deadline
        self.timer: asyncio.TimerHandle | None = None
        # True while counted in the queue's totals; see AdaptiveBatcher._unqueue.
        self.queued = True
        # The in-flight execution holding this request, once it is launched.
        self.token: object | None = None
        # The batcher's launch count when it was queued (see AdaptiveBatcher._stuck).
        self.launches = 0


class AdaptiveBatcher(Generic[R]):
    """Merges concurrent requests into batches and runs them off the event loop.

    ``execute`` runs in a worker thread with one stacked array and returns a
    result that callers slice by rows; it raises a TurnoutError on failure.
    ``inline``, if given, says how to run a batch on the loop's thread
    instead (None when the model cannot run there now).
    ``on_batch`` and ``on_timeout`` are called on the event loop, once per
    executed batch and once per expired request.
    """

    def __init__(
        self,
        execute: Callable[[np.ndarray[Any, Any]], R],
        config: BatchingConfig | None = None,
        *,
        name: str = "batcher",
        clock: Clock | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
        on_timeout: Callable[[], None] | None = None,
        on_overrun: Callable[[], None] | None = None,
        inline: Callable[[], InlineExecution[R] | None] | None = None,
    ) -> None:
        self.config = config or BatchingConfig()
        self.name = name
        self._execute = execute
        self._clock = clock or MonotonicClock()
        self._on_batch = on_batch
        self._on_timeout = on_timeout
        self._on_overrun = on_overrun
        # Executions in which some request's deadline passed: each counts once.
        self._overran: set[object] = set()
        self._launches = 0
        self._bisections: set[asyncio.Task[None]] = set()
        # The requests of each running execution, so close() can tell when all are answered.
        self._running: dict[object, list[_Pending]] = {}
        self._queue: deque[_Pending] = deque()
        self._queued_requests = 0
        self._queued_rows = 0
        # Each in-flight batch's future, with its start time and rows, for the cost model.
        self._in_flight: dict[object, tuple[float, int]] = {}
        self._delay_handle: asyncio.Handle | None = None
        self._cost = LinearCostModel()
        self._shed = 0
        self._timeouts = 0
        self._closing = False
        self._idle: asyncio.Event | None = None
        self._workers: BatchWorkers[Any] = BatchWorkers(
            self.config.max_concurrent_batches, name=f"turnout-{name}"
        )
        self._inline = (
            inline
            if inline is not None
            and self.config.inline_batch_ms > 0
            and self.config.max_concurrent_batches == 1
            else None
        )
        # CPU seconds each recent batch spent in the model, timed in the thread it
        # ran on: neither the loop's delays nor another process taking the core
        # must keep a fast model off the loop's thread.
        self._run_times: deque[float] = deque(maxlen=_RUN_TIMES)
        self._inline_now = False
        # After the watchdog stops a run, the version stays on the worker thread
        # until this launch count, each stop doubling the wait: a model that
        # keeps overrunning costs the loop ever less, while one stopped by a
        # passing pause of the whole process (a debugger, a stalled VM) comes back.
        self._inline_stops = 0
        self._inline_after = 0

    # -- admission -------------------------------------------------------------

    async def submit(
        self,
        rows: np.ndarray[Any, Any],
        *,
        deadline: float | None = None,
        started: float | None = None,
    ) -> BatchSlice[R]:
        """Queue ``rows`` and return this request's slice of the batch that ran them.

        ``deadline`` and ``started`` are times on the batcher's clock.
        """
        pending = self._queue_request(rows, deadline, started)
        try:
            return await pending.future  # type: ignore[no-any-return]
        finally:
            # A caller that expired or was cancelled while queued stays in the
            # deque until the next batch forms, but stops counting at once:
            # its rows must not shed live requests nor inflate the queue depth.
            self._unqueue(pending)

    def enqueue(
        self,
        rows: np.ndarray[Any, Any],
        *,
        deadline: float | None = None,
        started: float | None = None,
    ) -> asyncio.Future[BatchSlice[R]]:
        """Queue ``rows`` now; return the future of this request's slice (see :meth:`submit`).

        For callers that follow many requests with callbacks rather than a
        task each: cancelling the future withdraws the request. Refusals
        (overload, closing) raise here, before anything is queued.
        """
        pending = self._queue_request(rows, deadline, started)
        pending.future.add_done_callback(lambda _: self._unqueue(pending))
        return pending.future

    def _queue_request(
        self, rows: np.ndarray[Any, Any], deadline: float | None, started: float | None
    ) -> _Pending:
        if self._closing:
            raise ServerClosedError(f"{self.name} is shutting down and admits no new requests")
        size = len(rows)
        if self._queued_rows + size > self.config.max_queue_rows:
            self._shed += 1
            raise OverloadedError(
                f"{self.name} is overloaded: {self._queued_rows} rows already queued; retry later"
            )
        now = self._clock.now()
        if deadline is not None and self._predicted_finish(now, size) > deadline:
            self._shed += 1
            raise OverloadedError(
                f"{self.name} cannot answer within the request's deadline at the current"
                " load; retry later or allow more time"
            )
        loop = asyncio.get_running_loop()
        pending = _Pending(
            rows, loop.create_future(), now if started is None else started, deadline
        )
        self._queue.append(pending)
        self._queued_requests += 1
        self._queued_rows += size
        if deadline is not None:
            pending.launches = self._launches
            pending.timer = loop.call_later(max(0.0, deadline - now), self._expire, pending)
        if len(self._in_flight) < self.config.max_concurrent_batches and self._delay_handle is None:
            if self._inline_now:
                # One loop turn first, so that the requests arriving in this turn run
                # together rather than this one alone and the rest after it.
                self._schedule_next()
            else:
                self._launch()
        return pending

    def _unqueue(self, pending: _Pending) -> None:
        if pending.queued:
            pending.queued = False
            self._queued_requests -= 1
            self._queued_rows -= pending.size

    def _predicted_finish(self, now: float, size: int) -> float:
        cost = self._cost.estimate()
        if cost.samples == 0:
            return now
        busy = sum(
            max(0.0, started + cost.duration(rows) - now)
            for started, rows in self._in_flight.values()
        )
        rows = self._queued_rows + size
        batches = math.ceil(rows / self.config.max_batch_rows)
        queued = batches * cost.fixed + rows * cost.per_row
        return now + (busy + queued) / self.config.max_concurrent_batches

    def _expire(self, pending: _Pending) -> None:
        if not pending.future.done():
            self._timeouts += 1
            pending.future.set_exception(
                DeadlineExceededError(f"{self.name}: the request's deadline passed")
            )
            if self._on_timeout is not None:
                self._on_timeout()
            self._notify_if_idle()
            token = pending.token
            if token is not None and token in self._in_flight and token not in self._overran:
                # The model overran a deadline (or hangs): once per execution.
                self._overran.add(token)
                if self._on_overrun is not None:
                    self._on_overrun()
            elif token is None and self._stuck(pending) and self._on_overrun is not None:
                # It waited its whole life behind executions that overran deadlines: it
                # failed because the model does not answer, not for load. Counting it lets a
                # hung model's breaker open, so that later requests are refused at once
                # instead of each waiting out its deadline.
                self._on_overrun()

    def _stuck(self, pending: _Pending) -> bool:
        """True if no batch started since ``pending`` was queued, and every running one overran.

        Under load batches keep starting, and a request that times out in the
        queue is load's casualty; behind a hung model none starts.
        """
        running = self._in_flight.keys()
        return (
            self._launches == pending.launches
            and len(running) >= self.config.max_concurrent_batches
            and running <= self._overran
        )

    # -- batch formation and execution ------------------------------------------

    def _launch(self) -> None:
        """Start the next batch from the queue, if there is anything live in it."""
        batch = self._take_batch()
        if not batch:
            self._notify_if_idle()
            return
        rows = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
        started = self._clock.now()
        token = object()
        self._launches += 1
        self._in_flight[token] = (started, len(rows))
        self._running[token] = batch
        for pending in batch:
            pending.token = token
        execution = (
            self._inline()
            if self._inline_now
            and self._inline is not None
            and len(batch) <= self.config.inline_max_requests
            else None
        )
        if execution is not None:
            self._run_inline(execution, token, rows, batch, started)
        else:
            self._run_on_worker(token, rows, batch, started)

    def _run_on_worker(
        self, token: object, rows: np.ndarray[Any, Any], batch: list[_Pending], started: float
    ) -> None:
        def done(timed: tuple[R, float] | None, error: BaseException | None) -> None:
            result, ran = (None, None) if timed is None else timed
            self._finish(token, result, error, batch, len(rows), started, ran)

        self._workers.submit(self._timed_execute, rows, done)

    def _timed_execute(self, rows: np.ndarray[Any, Any]) -> tuple[R, float]:
        began = time.thread_time()
        result = self._execute(rows)
        return result, time.thread_time() - began

    def _run_inline(
        self,
        execution: InlineExecution[R],
        token: object,
        rows: np.ndarray[Any, Any],
        batch: list[_Pending],
        started: float,
    ) -> None:
        """Run a batch on the loop's thread under the watchdog; an overrun goes to a worker."""
        watched = WATCHDOG.arm(self.config.inline_watchdog_ms / 1e3, execution.stop)
        began = time.thread_time()
        result: R | None = None
        error: BaseException | None = None
        try:
            result = execution.run(rows)
        except Exception as exc:  # answered below, as a worker thread's would be
            error = exc
        ran = time.thread_time() - began
        if WATCHDOG.disarm(watched):
            self._inline_now = False
            self._inline_stops += 1
            self._inline_after = self._launches + _AFTER_STOP * 2 ** (self._inline_stops - 1)
            logger.warning(
                "%s: a batch of %d rows held the event loop past the %g ms"
                " inline_watchdog_ms; it was stopped, and this version's next %d batches"
                " run on a worker thread",
                self.name,
                len(rows),
                self.config.inline_watchdog_ms,
                self._inline_after - self._launches,
            )
            self._run_on_worker(token, rows, batch, started)
            return
        self._finish(token, result, error, batch, len(rows), started, ran)

    def _take_batch(self) -> list[_Pending]:
        queue, limit = self._queue, self.config.max_batch_rows
        batch: list[_Pending] = []
        total = 0
        now = self._clock.now()
        while queue:
            pending = queue[0]
            if pending.future.done():
                # Expired or cancelled while queued: it never runs.
                queue.popleft()
                self._unqueue(pending)
                continue
            if pending.deadline is not None and pending.deadline <= now:
                queue.popleft()
                self._unqueue(pending)
                if pending.timer is not None:
                    pending.timer.cancel()
                self._expire(pending)
                continue
            if batch and total + pending.size > limit:
                break
            queue.popleft()
            self._unqueue(pending)
            batch.append(pending)
            total += pending.size
        return batch

    def _finish(
        self,
        token: object,
        result: R | None,
        raised: BaseException | None,
        batch: list[_Pending],
        rows: int,
        started: float,
        ran: float | None = None,
    ) -> None:
        finished = self._clock.now()
        if ran is not None:
            self._note_run_time(ran)
        error: TurnoutError | None = None
        if isinstance(raised, TurnoutError):
            error = raised
        elif raised is not None:
            # An execute callable that broke its contract: still answer everyone.
            error = InferenceError(f"{self.name}: {type(raised).__name__}: {raised}")
            error.__cause__ = raised
        self._cost.observe(rows, finished - started)
        live = [p for p in batch if not p.future.done()]
        if error is not None and len(live) > 1 and not self._closing:
            # One poison request must not fail its batch-mates: find it.
            task = asyncio.ensure_future(self._bisect(token, live, error, rows, started))
            self._bisections.add(task)
            task.add_done_callback(self._bisections.discard)
            return
        del self._in_flight[token]
        del self._running[token]
        latencies: list[float] = []
        self._deliver(batch, result, error, finished, latencies)
        if error is None:
            self._report(rows, latencies, [], finished - started, None, token)
        else:
            self._report(rows, [], latencies, finished - started, error, token)
        self._schedule_next()

    def _note_run_time(self, seconds: float) -> None:
        """Keep the batch's run time; every so often, decide where the next batches run."""
        times = self._run_times
        times.append(seconds)
        if (
            self._inline is not None
            and len(times) == _RUN_TIMES
            and self._launches % 16 == 0
            and self._launches >= self._inline_after
        ):
            p99 = sorted(times)[int(0.99 * (_RUN_TIMES - 1))]
            self._inline_now = p99 <= self.config.inline_batch_ms / 1e3

    def _deliver(
        self,
        batch: list[_Pending],
        result: R | None,
        error: TurnoutError | None,
        finished: float,
        latencies: list[float],
    ) -> None:
        """Answer each still-waiting request of ``batch``, adding its latency to ``latencies``."""
        offset = 0
        for pending in batch:
            if pending.timer is not None:
                pending.timer.cancel()
            if not pending.future.done():
                if error is None:
                    pending.future.set_result(BatchSlice(result, offset, offset + pending.size))
                else:
                    pending.future.set_exception(_copy_error(error))
                latencies.append(finished - pending.started)
            offset += pending.size

    def _report(
        self,
        rows: int,
        succeeded: list[float],
        failed: list[float],
        duration: float,
        error: TurnoutError | None,
        token: object,
    ) -> None:
        """Tell ``on_batch`` of a batch: the latencies of its requests that succeeded and failed."""
        overran = token in self._overran
        self._overran.discard(token)
        if self._on_batch is None:
            return
        report = BatchReport(
            rows=rows,
            requests=len(succeeded) + len(failed),
            latencies=tuple(succeeded + failed) if failed else tuple(succeeded),
            duration=duration,
            error=error,
            failed_requests=len(failed),
            overran=overran,
            failed_latency=sum(failed),
        )
        try:
            self._on_batch(report)
        except Exception:
            # A broken listener must not stall the queue behind this batch.
            logger.exception("%s: on_batch listener failed", self.name)

    async def _bisect(
        self,
        token: object,
        batch: list[_Pending],
        error: TurnoutError,
        rows: int,
        started: float,
    ) -> None:
        """Re-run a failed batch in halves so that only the failing request(s) get the error.

        Halves run one after the other, in the failed batch's execution slot.
        A half that succeeds is answered; a failing half is split again. When
        both halves of a failing group fail, the fault is not one request's
        (the model is broken, or several rows are): every request in the
        group gets the error, which bounds the retries of a broken model to
        two. The batch is reported once, as one failure.
        """
        latencies: list[float] = []
        failures: list[float] = []

        async def attempt(group: list[_Pending]) -> TurnoutError | None:
            group = [p for p in group if not p.future.done()]
            if not group:
                return None
            stacked = np.concatenate([p.rows for p in group])
            outcome: tuple[R | None, TurnoutError | None] = await self._execute_async(stacked)
            result, raised = outcome
            if raised is not None:
                return raised
            self._deliver(group, result, None, self._clock.now(), latencies)
            return None

        async def split(group: list[_Pending], cause: TurnoutError) -> None:
            group = [p for p in group if not p.future.done()]
            if len(group) <= 1:
                self._deliver(group, None, cause, self._clock.now(), failures)
                return
            half = len(group) // 2
            left, right = group[:half], group[half:]
            left_error = await attempt(left)
            right_error = await attempt(right)
            if left_error is not None and right_error is not None:
                now = self._clock.now()
                self._deliver(left, None, left_error, now, failures)
                self._deliver(right, None, right_error, now, failures)
                return
            if left_error is not None:
                await split(left, left_error)
            if right_error is not None:
                await split(right, right_error)

        try:
            await split(batch, error)
        finally:
            # Whatever happened, nobody admitted is left waiting.
            self._deliver(batch, None, error, self._clock.now(), failures)
            del self._in_flight[token]
            del self._running[token]
            self._report(rows, latencies, failures, self._clock.now() - started, error, token)
            self._schedule_next()

    def _execute_async(self, rows: np.ndarray[Any, Any]) -> asyncio.Future[Any]:
        """Run ``rows`` on a worker; the future gives (result, error), never raises."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(result: R | None, raised: BaseException | None) -> None:
            if future.done():
                return
            if raised is None or isinstance(raised, TurnoutError):
                future.set_result((result, raised))
            else:
                wrapped = InferenceError(f"{self.name}: {type(raised).__name__}: {raised}")
                wrapped.__cause__ = raised
                future.set_result((result, wrapped))

        self._workers.submit(self._execute, rows, done)
        return future

    def _schedule_next(self) -> None:
        """Decide on the next batch one loop turn from now, not at once.

        The callers this batch just answered resume in this loop turn, and
        under closed-loop load most of them send their next request straight
        away. Launching at once would run whatever trickled in during the
        batch (often a single row) and leave them to queue behind it: batches
        would alternate between one row and all the rest, and half of them
        would pay a whole thread hand-off for one row. One turn later, they
        have all queued and go together.
        """
        if self._delay_handle is None:
            loop = asyncio.get_running_loop()
            self._delay_handle = loop.call_soon(self._after_batch)

    def _after_batch(self) -> None:
        self._delay_handle = None
        if not self._queue:
            self._notify_if_idle()
            return
        delay = self._worthwhile_wait()
        if delay > 0.0:
            loop = asyncio.get_running_loop()
            self._delay_handle = loop.call_later(delay, self._launch_after_wait)
        else:
            self._launch_after_wait()

    def _worthwhile_wait(self) -> float:
        """Seconds to wait for more requests before the next batch; 0 for none.

        Waiting delays the queued requests by the wait, and saves the fixed
        cost of one more batch for every request that arrives during it. The
        wait pays when the fixed cost exceeds it and the queue is short of a
        full batch; it never exceeds ``max_delay_ms`` nor the earliest deadline.
        """
        max_delay = self.config.max_delay_ms / 1e3
        if max_delay <= 0.0 or self._closing or self._queued_rows >= self.config.max_batch_rows:
            return 0.0
        cost = self._cost.estimate()
        if cost.samples < 8 or cost.fixed <= 0.0:
            return 0.0
        delay = min(max_delay, cost.fixed)
        deadlines = [p.deadline for p in self._queue if p.deadline is not None]
        if deadlines:
            slack = min(deadlines) - self._clock.now() - cost.duration(self.config.max_batch_rows)
            delay = min(delay, slack)
        return max(0.0, delay)

    def _launch_after_wait(self) -> None:
        self._delay_handle = None
        while self._queue and len(self._in_flight) < self.config.max_concurrent_batches:
            before = len(self._in_flight)
            self._launch()
            if len(self._in_flight) == before or self._delay_handle is not None:
                # Nothing launched, or a batch ran inline and already planned the next.
                break
        self._notify_if_idle()

    # -- lifecycle and statistics ------------------------------------------------

    def _notify_if_idle(self) -> None:
        if self._idle is not None and self._all_answered():
            self._idle.set()

    def _live_queue(self) -> bool:
        return any(not p.future.done() for p in self._queue)

    def _all_answered(self) -> bool:
        """True when no admitted request waits, queued or in a running batch."""
        if self._live_queue():
            return False
        return all(p.future.done() for batch in self._running.values() for p in batch)

    async def close(self, timeout: float | None = None) -> None:
        """Stop admitting requests, answer every admitted one, then release the workers.

        Waits until every admitted request is answered, not until every
        execution ends: a hung model's callers are answered by their
        deadlines, and its stuck thread is left behind. With ``timeout``
        (seconds), requests still unanswered then get ServerClosedError.
        """
        self._closing = True
        if self._delay_handle is not None:
            self._delay_handle.cancel()
            self._delay_handle = None
        while self._queue and len(self._in_flight) < self.config.max_concurrent_batches:
            before = len(self._in_flight)
            self._launch()
            if len(self._in_flight) == before:
                break
        if not self._all_answered():
            # One event for every concurrent close(): a second one must not
            # replace the event the first is waiting on.
            if self._idle is None:
                self._idle = asyncio.Event()
            try:
                await asyncio.wait_for(asyncio.shield(self._idle.wait()), timeout)
            except TimeoutError:
                self._abandon()
        self._workers.shutdown(wait=not self._in_flight)

    def _abandon(self) -> None:
        """Answer every request still waiting with ServerClosedError."""
        waiting = [*self._queue, *(p for batch in self._running.values() for p in batch)]
        for pending in waiting:
            if not pending.future.done():
                pending.future.set_exception(
                    ServerClosedError(f"{self.name} closed before the model answered")
                )

    @property
    def closing(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closing

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a batch now (cheaper than :meth:`statistics` per request)."""
        return self._queued_rows

    def statistics(self) -> BatcherStatistics:
        """Return a frozen snapshot of the queue, the batches in flight and the counters."""
        return BatcherStatistics(
            queued_requests=self._queued_requests,
            queued_rows=self._queued_rows,
            batches_in_flight=len(self._in_flight),
            shed=self._shed,
            timeouts=self._timeouts,
            closing=self._closing,
            cost=self._cost.estimate(),
            oldest_batch_seconds=max(
                (self._clock.now() - started for started, _ in self._in_flight.values()),
                default=0.0,
            ),
            inline=self._inline_now and self._inline is not None and self._inline() is not None,
        )


def _copy_error(error: TurnoutError) -> TurnoutError:
    """A fresh exception per caller, so tracebacks raised in different tasks don't mix."""
    try:
        copy = type(error)(*error.args)
    except TypeError:
        return error
    copy.__cause__ = error.__cause__
    return copy
