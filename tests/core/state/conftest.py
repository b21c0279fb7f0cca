"""Fixtures for the control-state contract: every implementation, and handles to one store.

``connect()`` returns a new handle to one shared store, as a second process
would hold one: for MemoryState, the same object (processes cannot share
it; servers in one process do); for RedisState, a new client of a real
redis-server, under a key prefix of its own per store; for SQLiteState, a
new connection to one database file.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from turnout import ControlState, MemoryState
from turnout.core.state.redis_state import RedisState
from turnout.core.state.sqlite_state import SQLiteState

Connect = Callable[[], ControlState]


def _memory(request: pytest.FixtureRequest) -> Callable[[], Connect]:
    def open_store() -> Connect:
        state = MemoryState()
        return lambda: state

    return open_store


def _redis(request: pytest.FixtureRequest) -> Callable[[], Connect]:
    url = request.getfixturevalue("redis_server").url

    def open_store() -> Connect:
        prefix = f"test-{uuid.uuid4().hex}"
        return lambda: RedisState(url, prefix=prefix)

    return open_store


def _sqlite(request: pytest.FixtureRequest) -> Callable[[], Connect]:
    directory = request.getfixturevalue("tmp_path")

    def open_store() -> Connect:
        path = directory / f"state-{uuid.uuid4().hex}.db"
        return lambda: SQLiteState(path)

    return open_store


IMPLEMENTATIONS = {"memory": _memory, "redis": _redis, "sqlite": _sqlite}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def opener(request: pytest.FixtureRequest) -> Callable[[], Connect]:
    """Open a new store of one implementation; return the function that connects to it."""
    return IMPLEMENTATIONS[request.param](request)


@pytest.fixture
async def connect(opener: Callable[[], Connect]) -> AsyncIterator[Connect]:
    handles: list[ControlState] = []
    opened = opener()

    def new_handle() -> ControlState:
        handle = opened()
        handles.append(handle)
        return handle

    yield new_handle
    for handle in handles:
        await handle.close()


@pytest.fixture
def state(connect: Connect) -> ControlState:
    return connect()
