"""Short batches run on the event loop's thread; a watchdog keeps a runaway model off it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from turnout import BatchingConfig, InvalidConfigError, ModelServer
from turnout.core.execution.batching import AdaptiveBatcher
from turnout.core.execution.inline import InlineExecution, Watchdog

# Enough batches for a version's first inline decision (see batching._RUN_TIMES).
WARM_UP = 112


def spin_model() -> onnx.ModelProto:
    """A regressor that adds m to its one feature, m the batch's largest value, in an ONNX Loop.

    m = 1 takes under a millisecond; m = 400,000 takes about a second, all of
    it inside one Loop node: a model that, for some inputs, runs "for ever".
    """
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [None, 1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [None, 1]),
        ],
        initializer=[helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    always = helper.make_tensor("always", TensorProto.BOOL, [], [True])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMax", ["X"], ["most"], keepdims=0),
            helper.make_node("Cast", ["most"], ["trips"], to=TensorProto.INT64),
            helper.make_node("Constant", [], ["cond"], value=always),
            helper.make_node("Loop", ["trips", "cond", "X"], ["y"], body=body),
        ],
        "spin",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


async def warm_up(server: ModelServer, model: str) -> None:
    for _ in range(WARM_UP):
        assert await server.predict(model, [[1.0]]) == pytest.approx([2.0])


async def longest_stall(stop: asyncio.Event) -> float:
    """The longest the loop went without running this task, until ``stop`` is set."""
    longest = 0.0
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.002)
        now = time.perf_counter()
        longest = max(longest, now - last)
        last = now
    return longest


async def test_a_fast_version_runs_its_batches_on_the_loop_thread(server: ModelServer) -> None:
    await server.deploy_model("spin", "v1", spin_model(), batching=BatchingConfig())
    batcher = server.get_deployment("spin").batcher
    assert not batcher.statistics().inline

    await warm_up(server, "spin")

    assert batcher.statistics().inline
    assert await server.predict("spin", [[3.0], [1.0]]) == pytest.approx([6.0, 4.0])


async def test_a_runaway_batch_on_the_loop_thread_is_stopped_and_moved_to_a_worker(
    server: ModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = BatchingConfig(inline_watchdog_ms=50)
    await server.deploy_model("spin", "v1", spin_model(), batching=config)
    await warm_up(server, "spin")
    batcher = server.get_deployment("spin").batcher
    assert batcher.statistics().inline

    done = asyncio.Event()
    stall = asyncio.ensure_future(longest_stall(done))
    await asyncio.sleep(0.01)
    runaway = asyncio.ensure_future(server.predict("spin", [[400_000.0]]))
    # The runaway starts on the loop's thread, and is moved to the worker within 50 ms.
    await asyncio.sleep(0.01)
    others = [await server.predict("spin", [[1.0]]) for _ in range(5)]
    answer = await runaway
    done.set()

    # Without the watchdog the loop would have stood still for the whole run (~1 s).
    assert await stall < 0.5
    assert answer == pytest.approx([800_000.0])
    assert others == [pytest.approx([2.0])] * 5
    assert not batcher.statistics().inline
    assert "held the event loop" in caplog.text
    # For a while: fast batches stay on the worker thread.
    await warm_up(server, "spin")
    assert not batcher.statistics().inline


async def test_a_version_with_slow_batches_stays_on_the_worker_thread(
    server: ModelServer,
) -> None:
    await server.deploy_model(
        "spin", "v1", spin_model(), batching=BatchingConfig(inline_batch_ms=0.001)
    )
    await warm_up(server, "spin")
    assert not server.get_deployment("spin").batcher.statistics().inline


async def test_inline_batch_ms_0_never_runs_on_the_loop_thread(server: ModelServer) -> None:
    await server.deploy_model(
        "spin", "v1", spin_model(), batching=BatchingConfig(inline_batch_ms=0)
    )
    await warm_up(server, "spin")
    assert not server.get_deployment("spin").batcher.statistics().inline


async def test_only_a_runtime_that_can_be_stopped_runs_inline(server: ModelServer) -> None:
    from turnout.core.deployments.faults import inject_faults

    await server.deploy_model("spin", "v1", spin_model())
    deployment = server.get_deployment("spin")
    with inject_faults(deployment):
        assert deployment.inline_execution() is None
        await warm_up(server, "spin")
        assert not deployment.batcher.statistics().inline


class Stubborn:
    """A Python stand-in for a runtime: each run polls for its stop, as ONNX Runtime does."""

    def __init__(self) -> None:
        self.threads: list[str] = []
        self.runaway = threading.Event()
        self._stopped = threading.Event()

    def run(self, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        self.threads.append(threading.current_thread().name)
        self._stopped.clear()
        if rows[0, 0] < 0 and not self._stopped.is_set():
            self.runaway.set()
            while not self._stopped.wait(0.001):
                pass
            raise RuntimeError("stopped")
        return rows * 2

    def stop(self) -> None:
        self._stopped.set()


async def test_the_batcher_answers_everyone_exactly_once_across_the_move() -> None:
    model = Stubborn()
    execution = InlineExecution(run=model.run, stop=model.stop)
    batcher: AdaptiveBatcher[np.ndarray[Any, Any]] = AdaptiveBatcher(
        lambda rows: rows * 2,
        BatchingConfig(inline_watchdog_ms=20, inline_max_requests=4),
        inline=lambda: execution,
    )
    for _ in range(WARM_UP):
        await batcher.submit(np.ones((1, 1)))
    assert batcher.statistics().inline

    answers = await asyncio.gather(
        *(batcher.submit(np.full((1, 1), value)) for value in (-1.0, 1.0, 2.0, 3.0))
    )

    # The stopped batch ran again on a worker (lambda: rows * 2): every row answered once.
    assert [float(piece.result[piece.start, 0]) for piece in answers] == [-2.0, 2.0, 4.0, 6.0]
    assert model.runaway.is_set()
    assert threading.main_thread().name in model.threads
    assert not batcher.statistics().inline
    # A thousand batches later the version is judged again, and is fast.
    for _ in range(1000 + WARM_UP):
        await batcher.submit(np.ones((1, 1)))
    assert batcher.statistics().inline
    await batcher.close()


def test_the_watchdog_stops_only_runs_past_their_bound() -> None:
    watchdog = Watchdog(tick=0.005)
    stopped: list[str] = []
    quick = watchdog.arm(1.0, lambda: stopped.append("quick"))
    slow = watchdog.arm(0.01, lambda: stopped.append("slow"))
    time.sleep(0.1)
    assert watchdog.disarm(slow)
    assert not watchdog.disarm(quick)
    assert stopped == ["slow"]


@pytest.mark.parametrize(
    "settings",
    [
        {"inline_batch_ms": -1},
        {"inline_batch_ms": float("nan")},
        {"inline_batch_ms": True},
        {"inline_watchdog_ms": 0},
        {"inline_batch_ms": 5, "inline_watchdog_ms": 5},
        {"inline_max_requests": 0},
        {"inline_max_requests": True},
    ],
)
def test_inline_settings_are_checked(settings: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfigError, match="inline"):
        BatchingConfig(**settings)


async def test_a_batch_of_many_requests_runs_on_the_worker_thread() -> None:
    model = Stubborn()
    batcher: AdaptiveBatcher[np.ndarray[Any, Any]] = AdaptiveBatcher(
        model.run,
        BatchingConfig(inline_max_requests=2),
        inline=lambda: InlineExecution(run=model.run, stop=model.stop),
    )
    for _ in range(WARM_UP):
        await batcher.submit(np.ones((1, 1)))
    assert batcher.statistics().inline
    model.threads.clear()

    # Four requests in one batch: others wait on the loop, so the batch goes to a worker.
    await asyncio.gather(*(batcher.submit(np.ones((1, 1))) for _ in range(4)))
    await asyncio.gather(*(batcher.submit(np.ones((1, 1))) for _ in range(2)))

    assert model.threads[0] != threading.main_thread().name
    assert model.threads[-1] == threading.main_thread().name
    await batcher.close()
