"""What one core can serve, and what turnout spends beyond it.

A server on one core pays, per request, at least what the ceiling pays over
the same protocol (read the request, parse the tensor, write the answer: on
aiohttp for the HTTP kinds, on grpc.aio for ``grpc-raw-1``) plus what ONNX
Runtime itself spends on the request's rows at the batch size the server
formed. So, per cell, with ``B`` turnout's mean batch there::

    model µs/req = raw ORT CPU µs per row at B * rows per request
    limit req/s  = 1 / (ceiling CPU s per request + model s per request)
    own µs/req   = turnout CPU µs/req - ceiling CPU µs/req - model µs/req
    % of limit   = turnout req/s / limit

The raw ORT cost is measured in the same run (:func:`measure_ort`): the CPU
time of bare ``session.run`` calls on the model file turnout serves, opened
with turnout's session options, on the servers' core, once the servers have
stopped (``benchmarks.httpbench.run_raw_ort``).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Limit", "OrtCost", "batch_sizes", "measure_ort", "serve_threads"]

WARMUP_SECONDS = 0.05  # per batch size, before its first timed slice: shapes allocate once


@dataclass(frozen=True)
class Limit:
    """One cell's physical limit on one core: serving stack plus model, CPU seconds per request."""

    stack: float  # the ceiling's CPU seconds per request, same kind (so protocol) and concurrency
    model: float  # raw ORT CPU seconds per row at the formed batch, times rows per request

    @classmethod
    def of(cls, ceiling_per_request: float, ort_per_row: float, rows: float) -> Limit:
        """Return the limit of requests of ``rows`` rows, from the ceiling's and ORT's costs."""
        return cls(ceiling_per_request, ort_per_row * rows)

    @property
    def per_request(self) -> float:
        """Return the CPU seconds a request cannot do without."""
        return self.stack + self.model

    @property
    def requests_per_second(self) -> float:
        """Return what one core could answer if a server spent nothing else."""
        return 1.0 / self.per_request

    def own(self, cpu_per_request: float) -> float:
        """Return the CPU seconds per request a server spends beyond the limit's."""
        return cpu_per_request - self.per_request

    def share(self, throughput: float) -> float:
        """Return ``throughput`` (requests/s) as a share of the limit."""
        return throughput / self.requests_per_second


@dataclass(frozen=True)
class OrtCost:
    """Raw ONNX Runtime's CPU time per ``session.run`` call at each batch size measured."""

    cpu_seconds: dict[int, float]  # rows per call -> CPU seconds over all its timed calls
    calls: dict[int, int]  # rows per call -> timed calls
    core: int | None = None  # the core it ran on, if pinned

    @property
    def sizes(self) -> list[int]:
        """Return the batch sizes measured, smallest first."""
        return sorted(self.calls)

    def per_call(self, rows: int) -> float:
        """Return the CPU seconds of one call of ``rows`` rows."""
        return self.cpu_seconds[rows] / self.calls[rows]

    def per_row(self, batch: float) -> float | None:
        """Return CPU seconds per row at a mean batch of ``batch`` rows; None off the sizes.

        A call's cost is close to affine in its rows (a + b·n), and for
        batches of mixed sizes whose mean is B the cost per row is then
        (a + b·B) / B: interpolating the cost per call linearly between the
        two sizes around B, and dividing by B, gives exactly that.
        """
        sizes = self.sizes
        if not sizes or not sizes[0] <= batch <= sizes[-1]:
            return None
        per_call = float(np.interp(batch, sizes, [self.per_call(n) for n in sizes]))
        return per_call / batch


def batch_sizes(batches: Iterable[float]) -> list[int]:
    """Return the whole sizes to measure so that every mean batch lies between two of them."""
    sizes = set()
    for batch in batches:
        if batch >= 1:
            sizes.update((math.floor(batch), math.ceil(batch)))
    return sorted(sizes)


def serve_threads() -> int:
    """Return the ORT threads per session that ``turnout serve`` runs: ModelServer's default."""
    from turnout import ModelServer

    threads: int = inspect.signature(ModelServer).parameters["runtime_threads"].default
    return threads


def measure_ort(
    model: Path,
    table: np.ndarray[Any, Any],
    sizes: Sequence[int],
    *,
    seconds: float,
    rounds: int = 1,
    core: int | None = None,
) -> OrtCost:
    """Time bare ``session.run`` calls at each size in CPU time, sizes in turn over ``rounds``.

    The session is opened on ``model``'s bytes with turnout's options
    (``benchmarks.core.open_session``); each size gets ``seconds`` in all.
    CPU time is this process's (``time.process_time``), so any thread ONNX
    Runtime used counts, as it does in a server's CPU time.
    """
    from benchmarks.core import batch_feeds, open_session, raw_loop

    session = open_session(model.read_bytes(), serve_threads())
    longest = max(sizes, default=1)
    if len(table) < longest:  # too few rows for one batch: repeat them
        table = np.concatenate([table] * math.ceil(longest / len(table)))
    feeds = {rows: batch_feeds(session, table, rows) for rows in sizes}
    cpu = dict.fromkeys(sizes, 0.0)
    calls = dict.fromkeys(sizes, 0)
    with _on_core(core):
        for rows in sizes:
            raw_loop(session, feeds[rows], WARMUP_SECONDS)
        for _ in range(rounds):
            for rows in sizes:
                began = time.process_time()
                calls[rows] += len(raw_loop(session, feeds[rows], seconds / rounds))
                cpu[rows] += time.process_time() - began
    return OrtCost(cpu, calls, core)


@contextlib.contextmanager
def _on_core(core: int | None) -> Iterator[None]:
    """Pin the calling thread to ``core`` for the block, then give back its cores."""
    if core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
