"""Opening a control state from where it lives, and refusing what is none."""

from __future__ import annotations

from pathlib import Path

import pytest

from turnout import InvalidConfigError, ModelServer
from turnout.core.state.locations import open_state
from turnout.core.state.redis_state import RedisState
from turnout.core.state.sqlite_state import SQLiteState


async def test_each_location_opens_its_kind_of_state(tmp_path: Path) -> None:
    assert open_state(None) is None
    assert open_state("memory") is None  # the server makes its own
    sqlite = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    assert isinstance(sqlite, SQLiteState)
    await sqlite.close()
    redis = open_state("redis://127.0.0.1:6379/0")
    assert isinstance(redis, RedisState)  # opening connects nothing yet
    await redis.close()


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("mongodb://x", "unknown control state 'mongodb://x'"),
        ("sqlite://", "names no file"),
        ("redis://host:notaport/0", "not a Redis URL"),
    ],
)
def test_a_location_that_is_none_is_refused(location: str, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        open_state(location)


def test_a_server_refuses_a_state_that_is_no_control_state() -> None:
    with pytest.raises(InvalidConfigError, match="state must be a ControlState"):
        ModelServer(state="redis://127.0.0.1:6379/0")  # type: ignore[arg-type]
