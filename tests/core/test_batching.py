"""AdaptiveBatcher, driven directly: its module docstring is the contract tested here.

The ``execute`` callable is a :class:`Doubler`: it returns its batch times two,
records every batch it sees and can be held in its worker thread, which is how
these tests make requests queue behind a running batch without sleeping. Time
that matters (deadlines, the cost model) comes from a FakeClock.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnout import (
    DeadlineExceededError,
    InferenceError,
    InvalidConfigError,
    OverloadedError,
    ServerClosedError,
)
from turnout.core.clock import FakeClock
from turnout.core.execution.batching import AdaptiveBatcher, BatchingConfig, BatchReport, BatchSlice
from turnout.core.execution.costmodel import LinearCostModel

Array = np.ndarray[Any, Any]


class Doubler:
    """An ``execute`` callable: returns ``batch * 2`` and records each batch it runs.

    ``hold()`` makes batches wait in their worker thread until ``release()``.
    With a clock, each batch advances it by ``fixed + per_row * rows`` seconds,
    so the batcher measures that as the batch's duration.
    """

    def __init__(
        self, clock: FakeClock | None = None, *, fixed: float = 0.0, per_row: float = 0.0
    ) -> None:
        self.batches: list[Array] = []
        self.clock, self.fixed, self.per_row = clock, fixed, per_row
        self.fail: Callable[[Array], Exception | None] = lambda batch: None
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def __call__(self, batch: Array) -> Array:
        self.batches.append(batch.copy())
        if not self._gate.wait(timeout=10):
            raise RuntimeError("the test never released this batch")
        if self.clock is not None:
            self.clock.advance(self.fixed + self.per_row * len(batch))
        error = self.fail(batch)
        if error is not None:
            raise error
        return batch * 2

    @property
    def sizes(self) -> list[int]:
        return [len(batch) for batch in self.batches]

    def saw(self, request: Array) -> bool:
        """True if any batch contained the first row of ``request``."""
        return any((batch == request[0]).all(axis=1).any() for batch in self.batches)


def rows(tag: int, n: int) -> Array:
    """``n`` rows of two columns, distinct from every other tag's rows."""
    return np.arange(2 * n, dtype=np.float64).reshape(n, 2) + 1000.0 * tag


def mine(piece: BatchSlice[Array]) -> Array:
    """The caller's own rows of the batch result."""
    return piece.result[piece.start : piece.stop]


async def until(condition: Callable[[], bool], turns: int = 100) -> None:
    """Let other tasks run until ``condition`` holds (event-loop turns, not sleeps)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


@pytest.fixture
async def make_batcher() -> AsyncIterator[Callable[..., AdaptiveBatcher[Array]]]:
    """Build batchers; afterwards release their Doublers and close them."""
    made: list[AdaptiveBatcher[Array]] = []
    doublers: list[Doubler] = []

    def make(execute: Callable[[Array], Array], *args: Any, **kwargs: Any) -> Any:
        batcher = AdaptiveBatcher(execute, *args, **kwargs)
        made.append(batcher)
        if isinstance(execute, Doubler):
            doublers.append(execute)
        return batcher

    yield make
    for doubler in doublers:
        doubler.release()
    for batcher in made:
        await batcher.close()


async def test_a_lone_request_at_idle_runs_at_once_in_a_batch_of_its_own(make_batcher):
    model = Doubler()
    # Even a generous max_delay is never waited at idle.
    batcher = make_batcher(model, BatchingConfig(max_delay_ms=1000))

    piece = await asyncio.wait_for(batcher.submit(rows(1, 3)), timeout=0.5)

    np.testing.assert_array_equal(mine(piece), rows(1, 3) * 2)
    assert model.sizes == [3]


async def test_requests_queued_behind_a_running_batch_form_the_next_batch_together(
    make_batcher,
):
    model = Doubler()
    batcher = make_batcher(model)
    model.hold()
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)

    queued = [asyncio.create_task(batcher.submit(rows(tag, tag))) for tag in (1, 2, 3)]
    await until(lambda: batcher.statistics().queued_requests == 3)
    model.release()

    np.testing.assert_array_equal(mine(await first), rows(0, 1) * 2)
    for tag, task in zip((1, 2, 3), queued, strict=True):
        np.testing.assert_array_equal(mine(await task), rows(tag, tag) * 2)
    assert model.sizes == [1, 1 + 2 + 3]


async def test_the_next_batch_is_bounded_by_max_batch_rows(make_batcher):
    model = Doubler()
    batcher = make_batcher(model, BatchingConfig(max_batch_rows=5))
    model.hold()
    tasks = [asyncio.create_task(batcher.submit(rows(0, 1)))]
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    sizes = [2, 2, 2, 2, 1]
    tasks += [asyncio.create_task(batcher.submit(rows(i + 1, n))) for i, n in enumerate(sizes)]
    await until(lambda: batcher.statistics().queued_requests == len(sizes))
    model.release()

    await asyncio.gather(*tasks)
    # Requests are taken whole and in arrival order while they fit.
    assert model.sizes == [1, 2 + 2, 2 + 2 + 1]


async def test_a_request_larger_than_max_batch_rows_runs_alone(make_batcher):
    model = Doubler()
    batcher = make_batcher(model, BatchingConfig(max_batch_rows=4))

    np.testing.assert_array_equal(mine(await batcher.submit(rows(9, 10))), rows(9, 10) * 2)
    assert model.sizes == [10]

    model.hold()
    tasks = [asyncio.create_task(batcher.submit(rows(0, 1)))]
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    tasks += [asyncio.create_task(batcher.submit(rows(t, n))) for t, n in [(1, 2), (2, 10), (3, 1)]]
    await until(lambda: batcher.statistics().queued_requests == 3)
    model.release()

    for task, (tag, n) in zip(tasks, [(0, 1), (1, 2), (2, 10), (3, 1)], strict=True):
        np.testing.assert_array_equal(mine(await task), rows(tag, n) * 2)
    assert model.sizes == [10, 1, 2, 10, 1]


async def _arrive_and_await(
    sizes: list[int],
    arrival: list[int],
    pauses: list[int],
    awaits: list[int],
    config: BatchingConfig,
) -> None:
    model = Doubler()
    batcher: AdaptiveBatcher[Array] = AdaptiveBatcher(model, config)
    tasks: dict[int, asyncio.Task[BatchSlice[Array]]] = {}
    for request, pause in zip(arrival, pauses, strict=True):
        for _ in range(pause):
            await asyncio.sleep(0)
        tasks[request] = asyncio.create_task(batcher.submit(rows(request, sizes[request])))
    for request in awaits:
        np.testing.assert_array_equal(mine(await tasks[request]), rows(request, sizes[request]) * 2)
    await batcher.close()

    # Every row ran exactly once; only a request too big for a batch made one bigger.
    executed = np.concatenate(model.batches)
    expected = np.concatenate([rows(i, n) for i, n in enumerate(sizes)])
    assert sorted(map(tuple, executed)) == sorted(map(tuple, expected))
    for batch in model.batches:
        assert len(batch) <= config.max_batch_rows or len(set(batch[:, 0] // 1000)) == 1
    if config.max_concurrent_batches == 1:
        # One batch at a time: requests ran in the order they arrived.
        tags = [int(tag) for tag in executed[:, 0] // 1000]
        assert list(dict.fromkeys(tags)) == list(arrival)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=25),
    max_batch_rows=st.integers(1, 16),
    concurrency=st.integers(1, 3),
    data=st.data(),
)
def test_every_caller_gets_exactly_its_own_rows_in_order(
    sizes: list[int], max_batch_rows: int, concurrency: int, data: st.DataObject
) -> None:
    n = len(sizes)
    arrival = data.draw(st.permutations(range(n)), label="arrival order")
    pauses = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n), label="pauses")
    awaits = data.draw(st.permutations(range(n)), label="await order")
    config = BatchingConfig(max_batch_rows=max_batch_rows, max_concurrent_batches=concurrency)
    asyncio.run(_arrive_and_await(sizes, arrival, pauses, awaits, config))


async def test_a_full_queue_refuses_at_once_and_loses_nothing_admitted(make_batcher):
    model = Doubler()
    config = BatchingConfig(max_batch_rows=4, max_queue_rows=10, max_request_rows=10)
    batcher = make_batcher(model, config)
    model.hold()
    admitted = {(0, 1): asyncio.create_task(batcher.submit(rows(0, 1)))}
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    for tag in (1, 2):
        admitted[tag, 4] = asyncio.create_task(batcher.submit(rows(tag, 4)))
    await until(lambda: batcher.statistics().queued_rows == 8)

    # 8 queued + 3 > 10: refused while the batch ahead is still held.
    with pytest.raises(OverloadedError, match="overloaded"):
        await batcher.submit(rows(3, 3))
    admitted[4, 2] = asyncio.create_task(batcher.submit(rows(4, 2)))  # exactly fills the queue
    await until(lambda: batcher.statistics().queued_rows == 10)
    model.release()

    for (tag, n), task in admitted.items():
        np.testing.assert_array_equal(mine(await task), rows(tag, n) * 2)
    assert not model.saw(rows(3, 3))
    assert sum(model.sizes) == 1 + 4 + 4 + 2
    assert batcher.statistics().shed == 1


async def test_a_deadline_passed_while_queued_drops_the_request_before_it_runs(
    make_batcher, fake_clock
):
    model = Doubler()
    timeouts: list[None] = []
    batcher = make_batcher(model, clock=fake_clock, on_timeout=lambda: timeouts.append(None))
    model.hold()
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    late = asyncio.create_task(batcher.submit(rows(1, 2), deadline=fake_clock.now() + 1.0))
    other = asyncio.create_task(batcher.submit(rows(2, 3)))
    await until(lambda: batcher.statistics().queued_requests == 2)

    fake_clock.advance(2.0)
    model.release()

    with pytest.raises(DeadlineExceededError):
        await late
    np.testing.assert_array_equal(mine(await other), rows(2, 3) * 2)
    await first
    assert not model.saw(rows(1, 2))
    assert model.sizes == [1, 3]
    assert batcher.statistics().timeouts == len(timeouts) == 1


async def test_a_deadline_is_answered_when_it_passes_not_when_the_queue_moves(
    make_batcher, fake_clock
):
    model = Doubler()
    batcher = make_batcher(model, clock=fake_clock)
    model.hold()
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)

    # The batch ahead is still held when the 10 ms deadline passes.
    with pytest.raises(DeadlineExceededError):
        await batcher.submit(rows(1, 5), deadline=fake_clock.now() + 0.01)
    stats = batcher.statistics()
    assert (stats.batches_in_flight, stats.queued_requests, stats.queued_rows) == (1, 0, 0)

    model.release()
    await first
    await batcher.submit(rows(2, 1))
    assert not model.saw(rows(1, 5))


async def test_a_deadline_the_cost_model_says_cannot_be_met_is_refused_at_once(
    make_batcher, fake_clock
):
    model = Doubler(fake_clock, per_row=0.1)
    batcher = make_batcher(model, clock=fake_clock)
    for n in (1, 2, 4):
        await batcher.submit(rows(n, n))
    assert batcher.statistics().cost.per_row == pytest.approx(0.1)

    model.hold()
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    # 0.1 s still to go ahead of it, then 0.5 s of its own: 50 ms cannot be met.
    with pytest.raises(OverloadedError, match="deadline"):
        await batcher.submit(rows(5, 5), deadline=fake_clock.now() + 0.05)
    patient = asyncio.create_task(batcher.submit(rows(6, 5), deadline=fake_clock.now() + 100))
    model.release()

    np.testing.assert_array_equal(mine(await patient), rows(6, 5) * 2)
    await first
    assert not model.saw(rows(5, 5))


async def test_a_cancelled_caller_is_dropped_before_its_batch_runs(make_batcher):
    model = Doubler()
    batcher = make_batcher(model, BatchingConfig(max_queue_rows=8, max_request_rows=8))
    model.hold()
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    gone = asyncio.create_task(batcher.submit(rows(1, 4)))
    kept = asyncio.create_task(batcher.submit(rows(2, 3)))
    await until(lambda: batcher.statistics().queued_requests == 2)

    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    stats = batcher.statistics()
    assert (stats.queued_requests, stats.queued_rows) == (1, 3)
    # The dropped caller's rows no longer take queue space: 3 + 5 fits in 8.
    late = asyncio.create_task(batcher.submit(rows(3, 5)))
    await until(lambda: batcher.statistics().queued_rows == 8)
    model.release()

    np.testing.assert_array_equal(mine(await kept), rows(2, 3) * 2)
    np.testing.assert_array_equal(mine(await late), rows(3, 5) * 2)
    await first
    assert model.sizes == [1, 3 + 5]
    assert not model.saw(rows(1, 4))


async def test_a_poison_request_fails_alone_and_its_batch_mates_get_their_results(
    make_batcher,
):
    model = Doubler()
    poison = rows(1, 1)[0]
    model.fail = lambda b: InferenceError("bad batch") if (b == poison).all(axis=1).any() else None
    reports: list[BatchReport] = []
    batcher = make_batcher(model, on_batch=reports.append)
    model.hold()
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    poisoned = asyncio.create_task(batcher.submit(rows(1, 2)))
    healthy = asyncio.create_task(batcher.submit(rows(2, 2)))
    await until(lambda: batcher.statistics().queued_requests == 2)
    model.release()

    with pytest.raises(InferenceError, match="bad batch"):
        await poisoned
    np.testing.assert_array_equal(mine(await healthy), rows(2, 2) * 2)
    await first
    np.testing.assert_array_equal(mine(await batcher.submit(rows(3, 2))), rows(3, 2) * 2)
    # The poisoned batch is reported once, as one failure, with one failed request.
    assert [(r.rows, r.requests, type(r.error), r.failed_requests) for r in reports] == [
        (1, 1, type(None), 0),
        (4, 2, InferenceError, 1),
        (2, 1, type(None), 0),
    ]


async def test_when_every_half_fails_each_request_gets_its_own_error(make_batcher):
    model = Doubler()
    model.fail = lambda b: InferenceError("broken model")
    batcher = make_batcher(model)
    model.hold()
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    doomed = [asyncio.create_task(batcher.submit(rows(tag, 2))) for tag in (1, 2, 3, 4)]
    await until(lambda: batcher.statistics().queued_requests == 4)
    model.release()

    errors = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(isinstance(e, InferenceError) for e in errors)
    assert len({id(e) for e in errors}) == 4  # each caller raises its own instance
    with pytest.raises(InferenceError):
        await first
    # A broken model is not bisected to the bottom: the batch and its two halves.
    assert model.sizes[-3:] == [8, 4, 4]


async def test_an_execute_that_raises_a_foreign_error_still_answers_with_inference_error(
    make_batcher,
):
    model = Doubler()
    model.fail = lambda batch: ValueError("boom")
    batcher = make_batcher(model)
    model.hold()
    tasks = [asyncio.create_task(batcher.submit(rows(tag, 1))) for tag in range(3)]
    await until(lambda: batcher.statistics().queued_requests == 2)
    model.release()

    errors = await asyncio.gather(*tasks, return_exceptions=True)
    for error in errors:
        assert isinstance(error, InferenceError)
        assert "ValueError: boom" in str(error)
        assert isinstance(error.__cause__, ValueError)
    assert len({id(error) for error in errors}) == 3
    model.fail = lambda batch: None
    np.testing.assert_array_equal(mine(await batcher.submit(rows(5, 1))), rows(5, 1) * 2)


async def test_a_failing_on_batch_listener_does_not_stall_the_queue(make_batcher, caplog):
    def listener(report: BatchReport) -> None:
        raise RuntimeError("listener broke")

    batcher = make_batcher(Doubler(), name="m:v1", on_batch=listener)
    for tag in range(3):
        np.testing.assert_array_equal(mine(await batcher.submit(rows(tag, 2))), rows(tag, 2) * 2)
    assert caplog.text.count("m:v1: on_batch listener failed") == 3


async def test_close_while_busy_answers_every_admitted_request_and_refuses_new_ones(
    make_batcher,
):
    model = Doubler()
    batcher = make_batcher(model, BatchingConfig(max_batch_rows=2))
    model.hold()
    tasks = [asyncio.create_task(batcher.submit(rows(tag, 1))) for tag in range(5)]
    await until(lambda: batcher.statistics().queued_requests == 4)

    closing = asyncio.create_task(batcher.close())
    await until(lambda: batcher.closing)
    with pytest.raises(ServerClosedError):
        await batcher.submit(rows(9, 1))
    assert not closing.done()
    model.release()
    await closing

    for tag, task in enumerate(tasks):
        np.testing.assert_array_equal(mine(task.result()), rows(tag, 1) * 2)
    assert model.sizes == [1, 2, 2]
    assert batcher.statistics().closing
    with pytest.raises(ServerClosedError):
        await batcher.submit(rows(9, 1))


async def test_concurrent_closes_all_return(make_batcher):
    model = Doubler()
    batcher = make_batcher(model)
    model.hold()
    task = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    closes = [asyncio.create_task(batcher.close()) for _ in range(3)]
    await until(lambda: batcher.closing)
    model.release()

    await asyncio.wait_for(asyncio.gather(*closes), timeout=5)
    await task


async def test_statistics_reflect_the_queue_and_the_batches_in_flight(make_batcher):
    model = Doubler()
    batcher = make_batcher(model)
    idle = batcher.statistics()
    assert (idle.queued_requests, idle.queued_rows, idle.batches_in_flight) == (0, 0, 0)
    assert (idle.cost.samples, idle.closing) == (0, False)

    model.hold()
    tasks = [asyncio.create_task(batcher.submit(rows(tag, tag + 1))) for tag in range(3)]
    await until(lambda: batcher.statistics().queued_requests == 2)
    busy = batcher.statistics()
    assert (busy.queued_requests, busy.queued_rows, busy.batches_in_flight) == (2, 2 + 3, 1)
    with pytest.raises(AttributeError):
        busy.queued_rows = 0  # type: ignore[misc]  # a frozen snapshot

    model.release()
    await asyncio.gather(*tasks)
    done = batcher.statistics()
    assert (done.queued_requests, done.queued_rows, done.batches_in_flight) == (0, 0, 0)
    assert done.cost.samples == 2


async def test_two_concurrent_batches_run_at_the_same_time(make_batcher):
    meeting = threading.Barrier(2, timeout=5)

    def execute(batch: Array) -> Array:
        meeting.wait()  # passes only when two batches are inside execute at once
        return batch * 2

    batcher = make_batcher(execute, BatchingConfig(max_concurrent_batches=2))
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    second = asyncio.create_task(batcher.submit(rows(1, 2)))
    await until(lambda: batcher.statistics().batches_in_flight == 2)

    np.testing.assert_array_equal(mine(await first), rows(0, 1) * 2)
    np.testing.assert_array_equal(mine(await second), rows(1, 2) * 2)


@pytest.mark.parametrize(
    "options",
    [
        {"max_batch_rows": 0},
        {"max_batch_rows": -1},
        {"max_batch_rows": 2.5},
        {"max_batch_rows": True},
        {"max_batch_rows": "8"},
        {"max_queue_rows": 0},
        {"max_request_rows": 0},
        {"max_queue_rows": 100},  # below the default max_request_rows
        {"max_queue_rows": 10, "max_request_rows": 11},
        {"max_delay_ms": -1},
        {"max_delay_ms": 1000.5},
        {"max_delay_ms": math.nan},
        {"max_delay_ms": math.inf},
        {"max_delay_ms": "5"},
        {"max_delay_ms": None},
        {"max_concurrent_batches": 0},
        {"max_concurrent_batches": 65},
        {"max_concurrent_batches": 1.5},
        {"max_concurrent_batches": True},
    ],
    ids=repr,
)
def test_batching_config_rejects_bad_values(options: dict[str, Any]) -> None:
    name = next(iter(options))
    with pytest.raises(InvalidConfigError, match=name):
        BatchingConfig(**options)


def test_batching_config_accepts_its_bounds() -> None:
    config = BatchingConfig(
        max_batch_rows=1,
        max_queue_rows=10,
        max_request_rows=10,
        max_delay_ms=1000,
        max_concurrent_batches=64,
    )
    assert config.max_delay_ms == 1000
    with pytest.raises(AttributeError):
        config.max_batch_rows = 2  # type: ignore[misc]


# -- the optional wait: taken only when the measured cost model says it pays ----------


async def _batches_after_a_busy_period(
    batcher: AdaptiveBatcher[Array], model: Doubler, clock: FakeClock, *, deadline: float | None
) -> list[int]:
    """Warm the cost model, then hold one batch with one request queued behind it.

    When the held batch finishes, a second request arrives at once: it joins
    the queued one only if the batcher chose to wait for more.
    """
    for n in range(1, 9):
        await batcher.submit(rows(100 + n, n))
    model.batches.clear()
    model.hold()
    first = asyncio.create_task(batcher.submit(rows(0, 1)))
    await until(lambda: batcher.statistics().batches_in_flight == 1)
    queued_deadline = None if deadline is None else clock.now() + deadline
    queued = asyncio.create_task(batcher.submit(rows(1, 1), deadline=queued_deadline))
    await until(lambda: batcher.statistics().queued_requests == 1)
    model.release()
    await first
    late = asyncio.create_task(batcher.submit(rows(2, 1)))
    await asyncio.gather(queued, late)
    return model.sizes


async def test_with_a_fixed_cost_per_batch_the_batcher_waits_for_more_requests(
    make_batcher, fake_clock
):
    # Each batch costs 100 ms + 1 ms per row; a wait of up to 100 ms pays.
    model = Doubler(fake_clock, fixed=0.1, per_row=0.001)
    batcher = make_batcher(model, BatchingConfig(max_delay_ms=500), clock=fake_clock)

    sizes = await _batches_after_a_busy_period(batcher, model, fake_clock, deadline=None)

    cost = batcher.statistics().cost
    assert (cost.fixed, cost.per_row) == (pytest.approx(0.1), pytest.approx(0.001))
    assert sizes == [1, 2]


async def test_without_a_fixed_cost_the_batcher_never_waits(make_batcher, fake_clock):
    model = Doubler(fake_clock, per_row=0.001)
    batcher = make_batcher(model, BatchingConfig(max_delay_ms=500), clock=fake_clock)

    sizes = await _batches_after_a_busy_period(batcher, model, fake_clock, deadline=None)

    assert batcher.statistics().cost.fixed == pytest.approx(0.0, abs=1e-9)
    assert sizes == [1, 1, 1]


async def test_with_max_delay_zero_the_batcher_never_waits(make_batcher, fake_clock):
    model = Doubler(fake_clock, fixed=0.1, per_row=0.001)
    batcher = make_batcher(model, BatchingConfig(max_delay_ms=0), clock=fake_clock)

    assert await _batches_after_a_busy_period(batcher, model, fake_clock, deadline=None) == [
        1,
        1,
        1,
    ]


async def test_the_batcher_does_not_wait_past_a_queued_deadline(make_batcher, fake_clock):
    model = Doubler(fake_clock, fixed=0.1, per_row=0.001)
    batcher = make_batcher(model, BatchingConfig(max_delay_ms=500), clock=fake_clock)

    # Admitted (the held batch's 0.101 s plus its own 0.101 s fit in 0.25 s), but
    # once the held batch has run, a full batch would no longer fit: no wait.
    sizes = await _batches_after_a_busy_period(batcher, model, fake_clock, deadline=0.25)

    assert sizes == [1, 1, 1]


def test_the_cost_model_recovers_a_line_from_observed_batches() -> None:
    model = LinearCostModel()
    assert model.estimate().samples == 0
    for n in [1, 5, 2, 64, 17, 8, 33, 3]:
        model.observe(n, 0.002 + 0.0005 * n)

    cost = model.estimate()
    assert cost.samples == 8
    assert cost.per_row == pytest.approx(0.0005)
    assert cost.fixed == pytest.approx(0.002)
    assert cost.duration(10) == pytest.approx(0.007)


def test_the_cost_model_follows_recent_batches() -> None:
    model = LinearCostModel(decay=0.5)
    for n in range(1, 20):
        model.observe(n, 1.0 + n)
    for n in range(1, 60):
        model.observe(n % 7 + 1, 0.01 * (n % 7 + 1))

    cost = model.estimate()
    assert cost.per_row == pytest.approx(0.01, rel=1e-3)
    assert cost.fixed == pytest.approx(0.0, abs=1e-3)


def test_the_cost_model_puts_all_cost_per_row_without_spread_in_batch_sizes() -> None:
    model = LinearCostModel()
    for _ in range(10):
        model.observe(4, 0.02)

    cost = model.estimate()
    assert (cost.per_row, cost.fixed) == (pytest.approx(0.005), 0.0)
    with pytest.raises(ValueError, match="decay"):
        LinearCostModel(decay=1.0)
