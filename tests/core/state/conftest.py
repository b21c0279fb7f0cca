"""Fixtures for the control-state contract: every implementation, and handles to one store.

``connect()`` returns a new handle to one shared store, as a second process
would hold one: for MemoryState, the same object (processes cannot share
it; servers in one process do). A further implementation adds itself to
``IMPLEMENTATIONS`` and runs every contract test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from turnout import ControlState, MemoryState

Connect = Callable[[], ControlState]


def _memory() -> Connect:
    state = MemoryState()
    return lambda: state


IMPLEMENTATIONS: dict[str, Callable[[], Connect]] = {"memory": _memory}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def opener(request: pytest.FixtureRequest) -> Callable[[], Connect]:
    """Open a new store of one implementation; return the function that connects to it."""
    return IMPLEMENTATIONS[request.param]


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
