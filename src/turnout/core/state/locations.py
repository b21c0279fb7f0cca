"""Opening a control state from where it lives: ``memory``, ``sqlite:///path`` or ``redis://...``."""

from __future__ import annotations

from urllib.parse import urlsplit

from turnout.core.errors import InvalidConfigError
from turnout.core.state.control import ControlState

__all__ = ["STATE_SCHEMES", "open_state"]

# What `turnout serve --state` (and TURNOUT_STATE) takes, besides "memory".
STATE_SCHEMES = ("redis", "rediss", "unix", "sqlite")


def open_state(location: str | None) -> ControlState | None:
    """Return the ControlState at ``location``; None for ``memory`` (a server's own).

    ``redis://[:password@]host:port/db`` (``rediss://`` over TLS,
    ``unix:///path/redis.sock``) is a RedisState, shared by every process
    given the same location. ``sqlite:///path/state.db`` is a SQLiteState,
    shared by the processes of one host.
    """
    if location is None or location.strip() in ("", "memory"):
        return None
    scheme = urlsplit(location).scheme
    if scheme not in STATE_SCHEMES:
        raise InvalidConfigError(
            f"unknown control state {location!r}: give memory, sqlite:///path/state.db"
            " or redis://host:port/db"
        )
    if scheme == "sqlite":
        from turnout.core.state.sqlite_state import SQLiteState

        path = urlsplit(location).path
        if not path:
            raise InvalidConfigError(f"{location!r} names no file: sqlite:///path/state.db")
        return SQLiteState(path)
    from turnout.core.state.redis_state import RedisState

    return RedisState(location)
