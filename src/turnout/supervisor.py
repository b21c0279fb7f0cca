"""``turnout serve --workers N``: one supervisor, N worker processes serving one port.

Each worker is a full ``turnout serve`` that binds the inference port (and
the admin port) with SO_REUSEPORT, so the kernel spreads connections over
the workers evenly: no worker is left without work, as with one socket
whose accepts go to whichever process wakes first. The supervisor binds the
ports first, and keeps them bound (not listening) while it runs: a port
already taken is refused at once, port 0 is resolved to one port for all,
and no other program takes the port while a worker restarts.

The workers share their control state (``--state``; by default a SQLite file
in ``<repository>/.turnout``, or in the supervisor's run directory without a
repository) and their artifacts (a directory of ONNX files by digest, beside
it), so a change made through any worker's admin API is in force on all, and
a version deployed through one is loaded by the others.
Only worker 0 trains the demo: the others load what it deploys. Every
worker is given ``--repository``; one writes it (worker 0, which locks it
first), storing what any of them changes, and the others stand by to take
the lock over if it dies.
The others start once worker 0 serves (it touches a ready file), and each
listens only once it has loaded every version the fleet routes to: no
connection reaches a worker that would answer 404 for a model still loading.

A worker that dies is restarted after a back-off (0.5 s, doubling to 30 s;
reset once a worker has run for a minute), and the supervisor says so. On
SIGTERM or SIGINT every worker drains the requests it admitted, and the
supervisor exits 0 once they have.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

__all__ = [
    "FIRST_BACKOFF",
    "FLEET_DIRECTORY",
    "HEALTHY_SECONDS",
    "MAX_BACKOFF",
    "RunDirectory",
    "Supervisor",
    "WorkerSlot",
    "restart_delay",
    "usable_cores",
]

FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# A worker that ran this long before it died is restarted after the first back-off again.
HEALTHY_SECONDS = 60.0
POLL_SECONDS = 0.1
# Where in a model repository the workers keep their shared state and artifacts.
FLEET_DIRECTORY = ".turnout"


def restart_delay(backoff: float, ran: float) -> tuple[float, float]:
    """Return how long to wait before restarting a worker that died after ``ran`` seconds,
    and the back-off for its next death; ``backoff`` is the one this death was due.

    The delay doubles with each death, up to MAX_BACKOFF, and is FIRST_BACKOFF
    again for a worker that had run HEALTHY_SECONDS.
    """
    delay = FIRST_BACKOFF if ran >= HEALTHY_SECONDS else backoff
    return delay, min(delay * 2, MAX_BACKOFF)


def usable_cores() -> int:
    """Return the number of cores this process may run on (``--workers auto``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class WorkerSlot:
    """One worker's place: its process now, when it started, and its next back-off."""

    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    backoff: float = FIRST_BACKOFF
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Starts ``count`` workers from ``command(index)``, restarts the dead, stops them all."""

    count: int
    command: Callable[[int], Sequence[str]]
    shutdown_timeout: float
    env: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = lambda line: print(f"turnout: {line}", file=sys.stderr, flush=True)
    # Worker 0 touches this file once it serves; until then the others wait (at most
    # ``first_timeout`` seconds: a worker 0 that cannot start must not hold up the rest).
    first_ready: Path | None = None
    first_timeout: float = 300.0

    def __post_init__(self) -> None:
        self._slots = [WorkerSlot(i) for i in range(self.count)]
        self._stopping = False
        self._waiting = self._slots[1:] if self.first_ready is not None else []

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT; return 0 once every worker has stopped."""
        previous = {
            number: signal.signal(number, self._stop) for number in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for slot in self._slots:
                if slot not in self._waiting:
                    self._start(slot)
            if not self._waiting:
                self._started()
            until = time.monotonic() + self.first_timeout
            while not self._stopping:
                now = time.monotonic()
                if self._waiting and (now >= until or self._first_serves()):
                    for slot in self._waiting:
                        self._start(slot)
                    self._waiting = []
                    self._started()
                self._tend(now)
                time.sleep(POLL_SECONDS)
            return self._stop_all()
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _first_serves(self) -> bool:
        return self.first_ready is not None and self.first_ready.exists()

    def _started(self) -> None:
        pids = ", ".join(str(s.process.pid) for s in self._slots if s.process)
        self.log(f"{self.count} workers started (pids {pids})")

    def _stop(self, number: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, slot: WorkerSlot) -> None:
        slot.process = subprocess.Popen(
            list(self.command(slot.index)), env={**os.environ, **self.env}
        )
        slot.started = time.monotonic()
        slot.restart_at = None

    def _tend(self, now: float) -> None:
        for slot in self._slots:
            process = slot.process
            if process is not None and process.poll() is not None:
                delay, slot.backoff = restart_delay(slot.backoff, now - slot.started)
                slot.restart_at = now + delay
                self.log(
                    f"worker {slot.index} (pid {process.pid}) exited with"
                    f" {_how(process.returncode)}; restarting it in {delay:g} s"
                )
                slot.process = None
            elif process is None and slot.restart_at is not None and now >= slot.restart_at:
                self._start(slot)
                assert slot.process is not None
                self.log(f"worker {slot.index} restarted (pid {slot.process.pid})")

    def _stop_all(self) -> int:
        live = [s.process for s in self._slots if s.process and s.process.poll() is None]
        self.log(f"stopping {len(live)} workers; each answers the requests it admitted")
        for process in live:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + 10.0
        for process in live:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log(f"worker pid {process.pid} did not stop in time; killing it")
                process.kill()
                process.wait()
        return 0


def _how(code: int) -> str:
    if code < 0:
        return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


class RunDirectory:
    """A temporary directory for one supervisor run (its ready file; without a repository,
    its state file and artifacts too)."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="turnout-workers-"))

    def shared(self, repository: str | None) -> Path:
        """Return where the workers keep their shared state and artifacts.

        In the repository, ``<repository>/.turnout``, when there is one: there
        they outlive the run as the repository does, and a restarted fleet
        finds its outcome totals, rollout history and ONNX files again (a
        model repository skips the entry: no model is named with a dot).
        Otherwise, or when the repository cannot be written, this directory.
        """
        if repository is None:
            return self.path
        directory = Path(repository) / FLEET_DIRECTORY
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(
                f"turnout: cannot keep the workers' shared state in {directory}"
                f" ({exc.strerror}); it lives for this run only",
                file=sys.stderr,
                flush=True,
            )
            return self.path
        return directory

    def close(self) -> None:
        """Remove the directory and what the workers left in it."""
        shutil.rmtree(self.path, ignore_errors=True)
