"""A fault-injecting model runtime, for tests and benchmarks of failure handling.

Wraps a real runtime and, on command, fails batches, fails a fraction of
them, slows them down, hangs them until released, or fails every batch that
contains a "poison" row::

    deployment = await server.deploy_model("m", "v1", model)
    with inject_faults(deployment) as faults:
        faults.fail_next(3)
        ...
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import InferenceError
from turnout.core.execution.runtime import ModelRuntime, RawOutput

__all__ = ["FaultInjectingRuntime", "inject_faults"]


class FaultInjectingRuntime:
    """A ModelRuntime that misbehaves on command; thread-safe, like the batches it runs."""

    def __init__(self, inner: ModelRuntime, *, seed: int = 0) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._fail_next = 0
        self._fail_fraction = 0.0
        self._delay = 0.0
        self._poison: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]] | None = None
        self._released = threading.Event()
        self._released.set()
        self.batches: list[int] = []
        self.closed = False

    def fail_next(self, batches: int = 1) -> None:
        """Fail the next ``batches`` batches."""
        with self._lock:
            self._fail_next = batches

    def fail_fraction(self, fraction: float) -> None:
        """Fail each batch with probability ``fraction`` (seeded, so runs repeat)."""
        with self._lock:
            self._fail_fraction = fraction

    def slow_down(self, seconds: float) -> None:
        """Add ``seconds`` of latency to every batch (0 restores normal speed)."""
        with self._lock:
            self._delay = seconds

    def hang(self) -> None:
        """Block every batch until :meth:`release` is called."""
        self._released.clear()

    def release(self) -> None:
        """Let hanging batches go on."""
        self._released.set()

    def poison_rows(
        self, is_poison: Callable[[np.ndarray[Any, Any]], np.ndarray[Any, Any]]
    ) -> None:
        """Fail every batch in which ``is_poison(batch)`` marks at least one row."""
        with self._lock:
            self._poison = is_poison

    def heal(self) -> None:
        """Stop injecting faults of every kind."""
        with self._lock:
            self._fail_next = 0
            self._fail_fraction = 0.0
            self._delay = 0.0
            self._poison = None
        self._released.set()

    def run(self, batch: np.ndarray[Any, Any]) -> RawOutput:
        """Run ``batch`` through the inner runtime, unless a fault is due."""
        self._released.wait()
        with self._lock:
            self.batches.append(len(batch))
            delay = self._delay
            fail = self._fail_next > 0 or self._random.random() < self._fail_fraction
            if self._fail_next > 0:
                self._fail_next -= 1
            poison = self._poison
        if delay:
            time.sleep(delay)
        if fail:
            raise InferenceError(f"injected failure on a batch of {len(batch)} rows")
        if poison is not None and bool(np.any(poison(batch))):
            raise InferenceError(f"a poison row in a batch of {len(batch)} rows")
        return self.inner.run(batch)

    def close(self) -> None:
        """Close the inner runtime."""
        self.closed = True
        self.inner.close()


@contextmanager
def inject_faults(deployment: Deployment) -> Iterator[FaultInjectingRuntime]:
    """Run ``deployment``'s batches through a FaultInjectingRuntime; heal it on exit.

    Healing on exit releases a hung batch, which would otherwise hold up the
    server's close.
    """
    faults = FaultInjectingRuntime(deployment.runtime)
    deployment.runtime = faults
    try:
        yield faults
    finally:
        faults.heal()
