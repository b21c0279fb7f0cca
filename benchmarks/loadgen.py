"""The built-in load generator (aiohttp client): closed loop, and open loop at a fixed rate.

Closed loop: C tasks, each sending its next request when the last one is
answered; it stands in for wrk when wrk is not installed.

Open loop: requests are due at fixed times (``start + i / rate``) whatever
the server does, and each latency is measured from when its request was
*due*, not from when it was sent. A server that stalls therefore shows its
stall in every request queued behind it, instead of slowing the generator
down and hiding it (coordinated omission, as Gil Tene named it; wrk2's
approach). Requests the generator itself could not send within 1 ms of their
time are counted, so an overloaded generator is seen, not mistaken for a slow
server.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import aiohttp
import numpy as np

from benchmarks.payloads import Payload
from benchmarks.stats import Window

__all__ = ["closed_loop", "open_loop"]

LATE = 0.001
GRACE = 2.0  # seconds an open-loop window waits for answers after its last request


def _session(connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def _send(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str], body: bytes
) -> bool:
    try:
        async with session.post(url, data=body, headers=headers) as reply:
            await reply.read()
            return reply.status < 400
    except (TimeoutError, aiohttp.ClientError):
        return False


async def closed_loop(url: str, payload: Payload, concurrency: int, seconds: float) -> Window:
    """Run ``concurrency`` closed-loop clients for ``seconds``."""
    target = url + payload.path
    latencies: list[float] = []
    errors = 0
    requests = itertools.cycle(payload.requests)
    async with _session(concurrency) as session:
        stop = time.perf_counter() + seconds

        async def client() -> None:
            nonlocal errors
            while (now := time.perf_counter()) < stop:
                headers, body = next(requests)
                ok = await _send(session, target, headers, body)
                latencies.append(time.perf_counter() - now)
                errors += not ok

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    values = np.asarray(latencies)
    return Window(len(values), errors, elapsed, values, np.ones(len(values)))


async def open_loop(url: str, payload: Payload, rate: float, seconds: float) -> Window:
    """Send ``rate`` requests per second for ``seconds``, each timed from when it was due."""
    target = url + payload.path
    count = max(1, int(rate * seconds))
    latencies = np.full(count, np.nan)
    failed = np.zeros(count, dtype=bool)
    late = 0
    requests = itertools.cycle(payload.requests)
    async with _session(0) as session:

        async def one(i: int, due: float, headers: dict[str, str], body: bytes) -> None:
            ok = await _send(session, target, headers, body)
            latencies[i] = time.perf_counter() - due
            failed[i] = not ok

        began = time.perf_counter()
        tasks = []
        for i in range(count):
            due = began + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > LATE:
                late += 1
            headers, body = next(requests)
            tasks.append(asyncio.ensure_future(one(i, due, headers, body)))
        # A server far slower than the rate would take minutes to drain its
        # backlog: what is unanswered after the grace period counts as failed,
        # with the time it had waited as its (lower bound) latency.
        _, unanswered = await asyncio.wait(tasks, timeout=max(GRACE, seconds))
        for task in unanswered:
            task.cancel()
        now = time.perf_counter()
        for i in np.flatnonzero(np.isnan(latencies)):
            latencies[i] = now - (began + i / rate)
            failed[i] = True
        elapsed = max(now - began, count / rate)
    answered = count - len(unanswered)
    return Window(answered, int(failed.sum()), elapsed, latencies, np.ones(count), sent_late=late)
