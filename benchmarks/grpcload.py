"""Closed-loop load over gRPC (grpc.aio): C calls in flight, each sending its next on answer.

The gRPC counterpart of ``loadgen.closed_loop``, for the ``grpc-raw-1`` kind:
it returns the same :class:`~benchmarks.stats.Window` and runs where the
built-in HTTP generator runs, in the harness's own process, pinned to the
generator's core. To spend as little CPU per call as it can, it sends bytes:
every ``ModelInferRequest`` was serialized once (``payloads.build_payload``),
the method is called with no serializer or deserializer, and an answer is
only checked for its status (an ``AioRpcError`` is an error).

HTTP/2 multiplexes calls over one connection, where the HTTP generators
hold one keep-alive connection per call in flight. So that the server sees
a like number of connections, the calls are spread over one channel each,
up to ``MAX_CHANNELS``; each channel has a subchannel (a TCP connection) of
its own, as grpc would otherwise share one between channels to the same
address. Channels connect before the clock starts.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import grpc
import numpy as np

from benchmarks.payloads import Payload
from benchmarks.stats import Window

__all__ = ["MAX_CHANNELS", "closed_loop", "one_call"]

MAX_CHANNELS = 64  # beyond, calls share channels: 256 in flight are 4 per connection
READY_TIMEOUT = 30.0  # seconds for every channel to connect (the service starts after HTTP)
CALL_TIMEOUT = 30.0  # a call's deadline: one past it counts as an error
# A channel's own subchannel pool: without it, channels to one address share a connection.
_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


async def closed_loop(
    target: str, payload: Payload, concurrency: int, seconds: float, channels: int | None = None
) -> Window:
    """Run ``concurrency`` closed-loop gRPC calls on ``target`` ("host:port") for ``seconds``."""
    count = max(1, min(concurrency, MAX_CHANNELS) if channels is None else channels)
    opened = [grpc.aio.insecure_channel(target, options=_OPTIONS) for _ in range(count)]
    latencies: list[float] = []
    errors = 0
    try:
        ready = asyncio.gather(*(channel.channel_ready() for channel in opened))
        await asyncio.wait_for(ready, READY_TIMEOUT)
        calls = [
            channel.unary_unary(payload.path, request_serializer=None, response_deserializer=None)
            for channel in opened
        ]
        bodies = itertools.cycle([body for _, body in payload.requests])
        stop = time.perf_counter() + seconds

        async def client(call: grpc.aio.UnaryUnaryMultiCallable) -> None:
            nonlocal errors
            while (now := time.perf_counter()) < stop:
                try:
                    await call(next(bodies), timeout=CALL_TIMEOUT)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(time.perf_counter() - now)

        began = time.perf_counter()
        await asyncio.gather(*(client(calls[i % count]) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        await asyncio.gather(*(channel.close() for channel in opened))
    values = np.asarray(latencies)
    return Window(len(values), errors, elapsed, values, np.ones(len(values)))


async def one_call(target: str, path: str, body: bytes) -> bytes:
    """Send one serialized request to ``target``'s method ``path``; return the answer's bytes."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(path, request_serializer=None, response_deserializer=None)
        answer: bytes = await call(body, timeout=READY_TIMEOUT, wait_for_ready=True)
        return answer
