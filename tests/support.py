"""Helpers shared by test modules, imported as ``from support import ...``.

``tests/`` is not a package: pytest's default (prepend) import mode puts it on
``sys.path`` because ``tests/conftest.py`` lives there, so this module imports
by its bare name from every folder below it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def eventually(condition: Callable[[], object], seconds: float = 10.0) -> float:
    """Poll ``condition()`` every millisecond until it holds; return the seconds it took.

    For work that finishes in threads or background tasks, which event-loop
    turns alone do not wait for. Raises AssertionError if ``condition()`` has
    not held after ``seconds``.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not condition():
        if loop.time() - started >= seconds:
            raise AssertionError(f"condition never held within {seconds} s")
        await asyncio.sleep(0.001)
    return loop.time() - started
