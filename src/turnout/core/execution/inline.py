"""Running short batches on the event-loop thread, and the watchdog that keeps that safe.

A batch handed to a worker thread pays for the hand-off: a queue put, a
thread woken, ``call_soon_threadsafe`` waking the loop back, and on a busy
core the two threads trading the GIL. On the VMs of ``benchmarks/`` that is
100 µs and more, ten times what ONNX Runtime takes for a row. A version whose
batches are known to be short runs them on the loop thread instead, where
the cost is only the run.

A model that suddenly takes much longer (an input that makes a Loop spin,
a pathological tree walk) would then freeze the loop and every request on
it. The :class:`Watchdog` thread stops such a run once it has taken
``bound`` seconds, through ONNX Runtime's ``RunOptions.terminate``, and the
batcher sends the batch to the worker thread, and the version's batches
after it for a while (longer after each stop). Only runs that can be
stopped this way are ever run inline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["WATCHDOG", "InlineExecution", "Watchdog", "WatchedRun"]

R = TypeVar("R")


@dataclass(frozen=True)
class InlineExecution(Generic[R]):
    """How to run one batch on the loop thread, and how to make that run end early.

    ``stop`` is called from the watchdog's thread while ``run`` is executing
    on the loop's; ``run`` must then raise promptly.
    """

    run: Callable[[np.ndarray[Any, Any]], R]
    stop: Callable[[], None]


class WatchedRun:
    """One armed run: when it must be stopped by, how, and whether it was."""

    __slots__ = ("deadline", "stop", "stopped")

    def __init__(self, deadline: float, stop: Callable[[], None]) -> None:
        self.deadline = deadline
        self.stop = stop
        self.stopped = False


class Watchdog:
    """A daemon thread that stops inline runs overrunning their bound.

    Arming and disarming are a dict insert and pop on the loop thread, no
    lock and no wake-up, so a batch pays about a microsecond for it. The
    thread looks at the armed runs every ``tick`` seconds while runs are
    being armed, and parks on an event after a second without any, so an
    idle server's watchdog costs nothing.
    """

    def __init__(self, tick: float = 0.01) -> None:
        self._tick = tick
        self._runs: dict[int, WatchedRun] = {}
        self._active = threading.Event()
        self._last_armed = 0.0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def arm(self, bound: float, stop: Callable[[], None]) -> WatchedRun:
        """Watch a run starting now: call ``stop`` if it is still armed after ``bound`` seconds."""
        now = time.monotonic()
        run = WatchedRun(now + bound, stop)
        self._runs[id(run)] = run
        self._last_armed = now
        if not self._active.is_set():
            self._ensure_thread()
            self._active.set()
        return run

    def disarm(self, run: WatchedRun) -> bool:
        """Stop watching ``run``; return True if the watchdog stopped it."""
        self._runs.pop(id(run), None)
        return run.stopped

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="turnout-watchdog", daemon=True
                )
                self._thread.start()

    def _watch(self) -> None:
        while True:
            self._active.wait()
            time.sleep(self._tick)
            now = time.monotonic()
            for run in list(self._runs.values()):
                if now >= run.deadline and not run.stopped:
                    run.stopped = True
                    run.stop()
            if not self._runs and now - self._last_armed > 1.0:
                self._active.clear()
                # A run armed between the check and the clear saw the event set.
                if self._runs:
                    self._active.set()


# One thread watches every batcher of the process: inline runs are short and
# rare to overrun, and a thread per deployed version would be idle weight.
WATCHDOG = Watchdog()
