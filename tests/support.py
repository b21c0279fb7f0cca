"""Helpers shared by test modules, imported as ``from support import ...``.

``tests/`` is not a package: pytest's default (prepend) import mode puts it on
``sys.path`` because ``tests/conftest.py`` lives there, so this module imports
by its bare name from every folder below it.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from turnout import ControlState, ModelState, OutcomeTotals
from turnout.core.state.control import Fence

# How long `turnout serve` may take to print its banner (the demo trains first).
STARTUP_SECONDS = 15.0


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


@asynccontextmanager
async def turnout_serve(
    *args: str, env: Mapping[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``turnout serve --port 0 *args`` as a subprocess; kill it if the test fails.

    ``env`` is added to this process's environment.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "turnout",
        "serve",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_banner(process: asyncio.subprocess.Process, last: str) -> list[str]:
    """Read stdout lines until one contains ``last``; return them all."""
    assert process.stdout is not None
    lines: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_SECONDS
    while not lines or last not in lines[-1]:
        line = await asyncio.wait_for(process.stdout.readline(), deadline - loop.time())
        if not line:
            assert process.stderr is not None
            errors = (await process.stderr.read()).decode()
            raise AssertionError(f"turnout serve exited early:\n{errors}")
        lines.append(line.decode().rstrip("\n"))
    return lines


class DelegatingState:
    """A ControlState that hands every call to ``inner``: the base of the tests' doubles."""

    def __init__(self, inner: ControlState) -> None:
        self.inner = inner

    async def read(self, model_id: str) -> ModelState:
        return await self.inner.read(model_id)

    async def model_ids(self) -> list[str]:
        return await self.inner.model_ids()

    async def write(self, state: ModelState, *, fence: Fence | None = None) -> ModelState:
        return await self.inner.write(state, fence=fence)

    async def hold_lease(self, name: str, holder: str, seconds: float) -> int | None:
        return await self.inner.hold_lease(name, holder, seconds)

    async def heartbeat(self, process: str, facts: Mapping[str, Any], seconds: float) -> None:
        await self.inner.heartbeat(process, facts, seconds)

    async def heartbeats(self) -> dict[str, dict[str, Any]]:
        return await self.inner.heartbeats()

    async def add_outcome(
        self, model_id: str, version: str, value: float, *, once: str | None = None
    ) -> OutcomeTotals | None:
        return await self.inner.add_outcome(model_id, version, value, once=once)

    async def outcomes(self, model_id: str) -> dict[str, OutcomeTotals]:
        return await self.inner.outcomes(model_id)

    async def subscribe(self, listener: Callable[[str, int], None]) -> Callable[[], None]:
        return await self.inner.subscribe(listener)

    async def close(self) -> None:
        await self.inner.close()


async def answers(session: aiohttp.ClientSession, url: str, want: int = 200) -> None:
    """Ask ``url`` over fresh connections until it answers ``want`` 10 times in a row."""
    deadline = asyncio.get_running_loop().time() + 60
    in_a_row, status = 0, 0
    while in_a_row < 10:
        assert asyncio.get_running_loop().time() < deadline, f"{url}: last {status}"
        try:
            async with session.get(url) as answer:
                status = answer.status
        except aiohttp.ClientConnectionError:
            status = 0
        in_a_row = in_a_row + 1 if status == want else 0
        if status != want:
            await asyncio.sleep(0.1)
