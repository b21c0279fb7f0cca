"""Closing a server that shares a control state ends in bounded time.

Whatever its background work is doing: a heartbeat or a lease renewal whose
cancel a Redis call lost (as redis-py's calls can on Python 3.11), or a write
the store never answers, which close gives up, saying so, after
CLOSE_WRITES_SECONDS. Each close is bounded by ``asyncio.wait_for``: one that
hangs fails its test instead of stalling the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services import RedisServer
from support import DelegatingState, eventually
from turnout import ModelServer, StateUnavailableError
from turnout.core.service import control_sync
from turnout.core.state.control import Fence, ModelState
from turnout.core.state.pending import stop_task
from turnout.core.state.redis_state import RedisState

CLOSE_SECONDS = 10.0


async def close_within(server: ModelServer, seconds: float = CLOSE_SECONDS) -> None:
    """Close ``server``, bounded by ``asyncio.wait_for``; fail if the bound was reached.

    Reaching it need not raise: wait_for's cancel reaches the background task
    a hung close awaits, which ends it, and a close that swallows the cancel
    then returns as if it had never hung.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(server.close(), seconds)
    took = loop.time() - started
    assert took < seconds, f"close hung: it ended only when cancelled, after {took:.1f} s"


class LosesACancel(DelegatingState):
    """A handle to a real Redis whose ``call`` (once armed) returns as if never cancelled.

    As redis-py's calls do now and then on Python 3.11: each command is sent
    under ``asyncio.wait_for``, which returns the send's result when the send
    completed in the loop turn the cancel came in, and drops the cancel
    (python/cpython#86296). A real Redis cannot be made to answer in that
    turn; here the armed call waits until it is cancelled, then answers.
    """

    def __init__(self, inner: RedisState, call: str) -> None:
        super().__init__(inner)
        self.call = call
        self.armed = False
        self.waiting = asyncio.Event()

    async def _lose_a_cancel(self, call: str) -> None:
        if not self.armed or call != self.call:
            return
        self.armed = False
        self.waiting.set()
        with contextlib.suppress(asyncio.CancelledError):  # answered in the cancel's turn
            await asyncio.Event().wait()

    async def heartbeats(self) -> dict[str, dict[str, Any]]:
        await self._lose_a_cancel("heartbeats")
        return await super().heartbeats()

    async def hold_lease(self, name: str, holder: str, seconds: float) -> int | None:
        await self._lose_a_cancel("hold_lease")
        return await super().hold_lease(name, holder, seconds)


class NeverAnswers(DelegatingState):
    """A handle to a real Redis whose writes, once armed, never come back.

    redis-py's socket timeouts bound a real Redis's silence; a ControlState
    of another make may not have any.
    """

    def __init__(self, inner: RedisState) -> None:
        super().__init__(inner)
        self.armed = False
        self.writing = asyncio.Event()

    async def write(self, state: ModelState, *, fence: Fence | None = None) -> ModelState:
        if self.armed:
            self.writing.set()
            await asyncio.Event().wait()
        return await super().write(state, fence=fence)


@pytest.fixture
async def redis_handle(redis_server: RedisServer) -> AsyncIterator[RedisState]:
    state = RedisState(redis_server.url, prefix=f"test-{uuid.uuid4().hex}")
    yield state
    await asyncio.wait_for(state.close(), CLOSE_SECONDS)


@pytest.mark.parametrize("call", ["heartbeats", "hold_lease"])
async def test_close_ends_a_background_loop_whose_redis_call_lost_the_cancel(
    redis_handle: RedisState, logistic_model: Any, call: str
) -> None:
    state = LosesACancel(redis_handle, call)
    async with ModelServer(state=state, entry_points=False) as server:
        await server.deploy_model("bc", "v1", logistic_model)
        state.armed = True
        await asyncio.wait_for(state.waiting.wait(), 5)  # the heartbeat or the renewal is in it
        await close_within(server)
    # Ended, not left behind: the lease lapses, and the fleet forgets the server.
    sync = server._sync  # type: ignore[attr-defined]
    assert sync._beating.done()
    assert sync.lease._renewing.done()


async def test_close_gives_up_a_write_the_store_never_answers_and_says_which(
    redis_handle: RedisState,
    logistic_model: Any,
    forest_model: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(control_sync, "CLOSE_WRITES_SECONDS", 0.5)
    state = NeverAnswers(redis_handle)
    async with ModelServer(state=state, entry_points=False) as server:
        await server.deploy_model("bc", "v1", logistic_model)
        await server.deploy_model("bc", "v2", forest_model, set_active=False)
        state.armed = True
        change = asyncio.create_task(server.set_active_version("bc", "v2"))
        await asyncio.wait_for(state.writing.wait(), 5)
        with caplog.at_level(logging.ERROR, logger="turnout"):
            await close_within(server)
    # The caller of the change hears that it was not written, not a cancellation of its own.
    with pytest.raises(StateUnavailableError, match="closed before this change was written"):
        await asyncio.wait_for(change, CLOSE_SECONDS)
    given_up = [r.getMessage() for r in caplog.records if "gave up" in r.getMessage()]
    assert given_up, caplog.text
    assert "writing the control state of bc" in given_up[0]
    assert (await redis_handle.read("bc")).active == "v1"  # as the log says: not written


async def test_stop_task_ends_a_loop_whose_cancel_wait_for_dropped() -> None:
    loop = asyncio.get_running_loop()
    replies: list[asyncio.Future[None]] = []

    async def beat() -> None:  # a loop around a call sent under wait_for, as redis-py sends
        while True:
            reply: asyncio.Future[None] = loop.create_future()
            replies.append(reply)
            await asyncio.wait_for(reply, 10)
            await asyncio.sleep(1)

    task = loop.create_task(beat())
    await eventually(lambda: replies)
    replies[0].set_result(None)  # the reply lands in the turn the cancel comes in
    task.cancel()
    await asyncio.sleep(0.05)
    if sys.version_info < (3, 12):  # wait_for answered and dropped the cancel
        assert not task.done()
    assert await asyncio.wait_for(stop_task(task, "a heartbeat"), CLOSE_SECONDS)
    assert task.cancelled()


async def test_stop_task_leaves_a_task_that_will_not_end_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1)

    task = asyncio.get_running_loop().create_task(stubborn())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR, logger="turnout"):
        assert not await asyncio.wait_for(stop_task(task, "a stubborn loop", 0.2), CLOSE_SECONDS)
    assert "a stubborn loop did not end within 0.2 s" in caplog.text
    stop.set()
    task.cancel()
    await asyncio.wait((task,), timeout=CLOSE_SECONDS)
    assert task.done()
