"""Choosing the event loop of a benchmarked server process: uvloop when installed, or asyncio."""

from __future__ import annotations

import asyncio
import importlib.util

__all__ = ["LOOPS", "default_loop", "use_loop"]

LOOPS = ("uvloop", "asyncio")


def default_loop() -> str:
    """Return "uvloop" if it is installed, else "asyncio"."""
    return "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"


def use_loop(name: str) -> None:
    """Make ``asyncio.run`` in this process use the named loop."""
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif name != "asyncio":
        raise ValueError(f"unknown event loop {name!r}; choose from {', '.join(LOOPS)}")
