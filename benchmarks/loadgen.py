"""The built-in load generator (a lean HTTP/1.1 client): closed loop, and open loop at a rate.

Closed loop: C tasks, each sending its next request when the last one is
answered; it stands in for wrk when wrk is not installed.

Open loop: requests are due at fixed times (``start + i / rate``) whatever
the server does, and each latency is measured from when its request was
*due*, not from when it was sent. A server that stalls therefore shows its
stall in every request queued behind it, instead of slowing the generator
down and hiding it (coordinated omission, as Gil Tene named it; wrk2's
approach). Requests the generator itself could not send within 1 ms of their
time are counted, whatever the reason (already overdue, or a sleep that woke
late), so an overloaded generator is seen, not mistaken for a slow server.
Throughput is over the scheduled window: requests answered / window length;
the wait for the last replies after it is reported apart, as the tail.
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
SPIN = 0.002  # the last stretch before a due time is waited out by yielding, not sleeping
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
        nonlocal late, last_reply
        if time.perf_counter() - due > LATE:  # sent now: late, however it came to be
            late += 1
        ok = await pool.send(request)
        last_reply = time.perf_counter()
        latencies[i] = last_reply - due
        failed[i] = not ok

    last_reply = 0.0

    try:
        began = time.perf_counter()
        tasks = []
        for i in range(count):
            due = began + i / rate
            # The loop's timers wake up to a millisecond late: sleep until shortly
            # before the due time, then yield to the loop until it comes (the
            # generator has a core of its own), so requests leave on time.
            while (delay := due - time.perf_counter()) > 0:  # noqa: ASYNC110 - a deadline
                await asyncio.sleep(delay - SPIN if delay > SPIN else 0)
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
        window = count / rate  # the scheduled window: every request was due within it
        last_due = began + (count - 1) / rate
        tail = max(0.0, (now if unanswered else last_reply) - last_due)
    finally:
        pool.close()
    answered = count - len(unanswered)
    return Window(
        answered,
        int(failed.sum()),
        window,
        latencies,
        np.ones(count),
        sent_late=late,
        tail_seconds=tail,
    )
