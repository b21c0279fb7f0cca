"""Helpers shared by test modules, imported as ``from support import ...``.

``tests/`` is not a package: pytest's default (prepend) import mode puts it on
``sys.path`` because ``tests/conftest.py`` lives there, so this module imports
by its bare name from every folder below it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from services import RedisServer
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


# -- turnout serve --workers N, and what the tests ask of it over loopback ------------------------

# The admin token of the fleets these helpers start, and the demo model they serve.
TOKEN = "workers-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "breast_cancer"
INFER = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": [0.5] * 30}]}


@dataclass
class Fleet:
    """A running ``turnout serve --workers N`` and its two URLs."""

    process: asyncio.subprocess.Process
    url: str
    admin: str
    pids: set[int] = field(default_factory=set)  # of the workers ready at the start


# A worker that holds a request this long without answering is a failure in itself.
ANSWER_SECONDS = 10.0


async def fresh(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """One request over a new connection; return its status and JSON body.

    AssertionError, naming the request, if it is not answered in ANSWER_SECONDS.
    """
    connector = aiohttp.TCPConnector(force_close=True)
    own_timeout = "timeout" in kwargs  # then the caller counts its timeouts itself
    kwargs.setdefault("timeout", aiohttp.ClientTimeout(total=ANSWER_SECONDS))
    try:
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.request(method, url, **kwargs) as response,
        ):
            return response.status, await response.json()
    except TimeoutError:
        if own_timeout:
            raise
        raise AssertionError(f"{method} {url} got no answer in {ANSWER_SECONDS} s") from None


async def infer(fleet: Fleet, **kwargs: Any) -> tuple[int, Any]:
    """One V2 inference of the demo over a new connection."""
    return await fresh("POST", f"{fleet.url}/v2/models/{MODEL}/infer", json=INFER, **kwargs)


async def worker_pids(fleet: Fleet, want: int, seconds: float = 45.0) -> set[int]:
    """The pids answering the admin API, until ``want`` of them are ready and seen.

    New connections reach a random worker (SO_REUSEPORT), and four workers
    starting on two busy cores can take 20 s: hence the generous bound.
    """
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = await fresh("GET", f"{fleet.admin}/admin/status", headers=HEADERS)
        ready, _ = await fresh("GET", f"{fleet.url}/v2/health/ready")
        if status == 200 and ready == 200 and MODEL in body["models"]:
            seen.add(body["pid"])
            if len(seen) >= want:
                return seen
    raise AssertionError(f"saw {len(seen)} of {want} ready workers in {seconds} s")


async def listed(
    fleet: Fleet, until: Callable[[dict[int, Any]], bool], seconds: float = 10.0
) -> dict[int, Any]:
    """GET /admin/fleet every 0.1 s until ``until(facts by pid)`` holds; return those facts.

    Each worker beats once a second, so what it lists may be up to a second old.
    """
    deadline = time.monotonic() + seconds
    while True:
        status, body = await fresh("GET", f"{fleet.admin}/admin/fleet", headers=HEADERS)
        assert status == 200, body
        by_pid = {facts["pid"]: facts for facts in body["processes"].values()}
        if until(by_pid):
            return by_pid
        assert time.monotonic() < deadline, f"/admin/fleet never settled in {seconds} s: {by_pid}"
        await asyncio.sleep(0.1)


def loaded_on(pids: set[int]) -> Callable[[dict[int, Any]], bool]:
    """True of a fleet listing in which exactly ``pids`` serve the demo's two versions."""

    def holds(by_pid: dict[int, Any]) -> bool:
        return set(by_pid) == pids and all(
            MODEL in facts["models"] and facts["models"][MODEL]["loaded"] == ["v1", "v2"]
            for facts in by_pid.values()
        )

    return holds


@asynccontextmanager
async def serving(workers: int, *args: str, wait: bool = True) -> AsyncIterator[Fleet]:
    """Run ``turnout serve --demo --workers N *args``; stop it after.

    Yields once every worker is ready, or with ``wait=False`` once the banner is printed.
    """
    env = {"TURNOUT_ADMIN_TOKEN": TOKEN}
    args = ("--demo", "--workers", str(workers), "--admin-port", "0", *args)
    async with turnout_serve(*args, env=env) as process:
        banner = await read_banner(process, "/admin/status")
        url = banner[0].split()[4]
        admin = banner[-1].strip().split()[-1].removesuffix("/admin/status")
        fleet = Fleet(process, url, admin)
        try:
            if wait:
                fleet.pids = await worker_pids(fleet, workers)
            yield fleet
        finally:
            # SIGTERM, not turnout_serve's SIGKILL, even for a failed test: the supervisor
            # stops its workers; killed, it would leave them running.
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 30)


@asynccontextmanager
async def sharing(redis: RedisServer, workers: int) -> AsyncIterator[Fleet]:
    """``workers`` workers with their control state in ``redis``, each with the demo loaded."""
    async with serving(workers, "--state", redis.url) as fleet:
        await listed(fleet, loaded_on(fleet.pids))
        yield fleet


@asynccontextmanager
async def steady_load(
    fleet: Fleet, clients: int = 4, each: int = 5000
) -> AsyncIterator[list[tuple[float, Any]]]:
    """Inference from ``clients`` loops, each over fresh connections, until the block ends.

    Yields the answers as they come, ``(when, status)``; a request that got no
    answer has the exception's repr for status. Each loop stops after ``each``.
    """
    answers: list[tuple[float, Any]] = []
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=10)

    async def client() -> None:
        for _ in range(each):
            if stop.is_set():
                return
            answer: int | str
            try:
                answer, _ = await infer(fleet, timeout=timeout)
            except (aiohttp.ClientError, TimeoutError) as exc:
                answer = repr(exc)
            answers.append((time.perf_counter(), answer))

    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    try:
        yield answers
    finally:
        stop.set()
        await asyncio.gather(*tasks)
