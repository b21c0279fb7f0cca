"""The built-in load generator (a lean HTTP/1.1 client): closed loop, and open loop at a rate.

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

import numpy as np

from benchmarks.payloads import Payload
from benchmarks.rawhttp import ConnectionPool, prepare
from benchmarks.stats import Window

__all__ = ["closed_loop", "open_loop"]

LATE = 0.001
GRACE = 2.0  # seconds an open-loop window waits for answers after its last request


async def closed_loop(url: str, payload: Payload, concurrency: int, seconds: float) -> Window:
    """Run ``concurrency`` closed-loop clients for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    requests = itertools.cycle([prepare(url, payload.path, h, b) for h, b in payload.requests])
    pool = ConnectionPool(url)
    stop = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        while (now := time.perf_counter()) < stop:
            ok = await pool.send(next(requests))
            latencies.append(time.perf_counter() - now)
            errors += not ok

    began = time.perf_counter()
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        pool.close()
    elapsed = time.perf_counter() - began
    values = np.asarray(latencies)
    return Window(len(values), errors, elapsed, values, np.ones(len(values)))


async def open_loop(url: str, payload: Payload, rate: float, seconds: float) -> Window:
    """Send ``rate`` requests per second for ``seconds``, each timed from when it was due."""
    count = max(1, int(rate * seconds))
    latencies = np.full(count, np.nan)
    failed = np.zeros(count, dtype=bool)
    late = 0
    requests = itertools.cycle([prepare(url, payload.path, h, b) for h, b in payload.requests])
    pool = ConnectionPool(url)

    async def one(i: int, due: float, request: bytes) -> None:
        ok = await pool.send(request)
        latencies[i] = time.perf_counter() - due
        failed[i] = not ok

    try:
        began = time.perf_counter()
        tasks = []
        for i in range(count):
            due = began + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > LATE:
                late += 1
            tasks.append(asyncio.ensure_future(one(i, due, next(requests))))
        # A server far slower than the rate would take minutes to drain its
        # backlog: what is unanswered after the grace period counts as failed,
        # with the time it had waited as its (lower bound) latency.
        _, unanswered = await asyncio.wait(tasks, timeout=max(GRACE, seconds))
        for task in unanswered:
            task.cancel()
        await asyncio.gather(*unanswered, return_exceptions=True)
        now = time.perf_counter()
        for i in np.flatnonzero(np.isnan(latencies)):
            latencies[i] = now - (began + i / rate)
            failed[i] = True
        elapsed = max(now - began, count / rate)
    finally:
        pool.close()
    answered = count - len(unanswered)
    return Window(answered, int(failed.sum()), elapsed, latencies, np.ones(count), sent_late=late)
