"""Which event loop ``turnout serve`` runs on: uvloop when it is installed, else asyncio's."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable

from turnout.core.errors import InvalidConfigError

__all__ = ["EVENT_LOOPS", "loop_factory"]

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(name: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return the loop factory for ``asyncio.Runner``; None means asyncio's own loop.

    uvloop serves the same requests with 5-10% less CPU per request
    (benchmarks/README.md); ``auto`` takes it when ``turnout[uvloop]`` is installed.
    """
    if name not in EVENT_LOOPS:
        raise InvalidConfigError(f"event loop must be one of {', '.join(EVENT_LOOPS)}: {name!r}")
    if name == "asyncio" or (name == "auto" and importlib.util.find_spec("uvloop") is None):
        return None
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        raise InvalidConfigError("uvloop is not installed: pip install 'turnout[uvloop]'") from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
