"""Server processes under test: started pinned to one core, probed, measured, stopped.

Every server runs in its own process group pinned to ``SERVER_CPU``, the
first core this process may use (set with ``os.sched_setaffinity`` before it
starts, so its threads and the processes it forks inherit it); the load
generator keeps another usable core, ``GENERATOR_CPU``. A server may be
given more of the usable cores (``ServerSpec.cores``; the workers section
gives each ``turnout serve --workers N`` all of them, the generator's
included). A server's CPU time is its whole process group's: a supervisor's
and every one of its workers'. All servers of a run
stay up together and take turns, so each is measured in the same conditions
as the others. After each turn the harness waits until the server measured
is idle again (:meth:`RunningServer.settle`): a server still working through
requests queued when its load stopped would otherwise take the core from the
next one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "GENERATOR_CPU",
    "SERVER_CPU",
    "RunningServer",
    "ServerSpec",
    "free_port",
    "machine_cpu_seconds",
    "pin_generator",
    "usable_cores",
]

_USABLE = sorted(os.sched_getaffinity(0))  # read at import, before this process is pinned
SERVER_CPU = _USABLE[0]
GENERATOR_CPU = _USABLE[1] if len(_USABLE) > 1 else _USABLE[0]
_SPLIT = len(_USABLE) > 1
IDLE_WINDOW = 0.2  # seconds over which a server's CPU time is watched while settling
IDLE_SHARE = 0.05  # a server using at most this share of a core over the window is idle
READY_PER_WORKER = 10  # fresh connections answered ready in a row, per worker, at start
_TICKS = os.sysconf("SC_CLK_TCK")
REPO_ROOT = Path(__file__).resolve().parent.parent


def machine_cpu_seconds() -> float:
    """Return the CPU time all cores of the machine have been busy so far (``/proc/stat``).

    Busy: user, nice, system, irq, softirq, and steal (taken by the hypervisor
    for other guests); neither idle nor iowait.
    """
    with open("/proc/stat") as stat:
        fields = stat.readline().split()  # "cpu user nice system idle iowait irq softirq steal"
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def usable_cores() -> list[int]:
    """Return the cores this process could use when it started (before any pinning)."""
    return list(_USABLE)


def pin_generator() -> str:
    """Pin this process (the load generator) to its core; say how the cores are split."""
    if _SPLIT:
        os.sched_setaffinity(0, {GENERATOR_CPU})
        return f"servers on CPU {SERVER_CPU}, load generator on CPU {GENERATOR_CPU}"
    return f"fewer than 2 usable cores ({_USABLE}): servers and load generator share them"


def free_port() -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server under test, and what it speaks."""

    name: str  # as shown in reports, e.g. "turnout adaptive"
    argv: tuple[str, ...]  # "{port}" is replaced by the chosen port
    flavour: str = "turnout"  # which payloads it takes: "turnout" or "mlserver"
    ready_path: str = "/v2/health/ready"
    reports_batches: bool = False  # turnout's /metrics tells rows per batch
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ports: int = 1  # MLServer also listens for gRPC and metrics: "{port1}", "{port2}"
    start_timeout: float = 120.0
    workers: int = 1  # turnout serve --workers N: N worker processes under a supervisor
    cores: int = 1  # pinned to this many of the usable cores, the first ones (all at most)
    grpc: bool = False  # serves the harness's gRPC kinds on "{port1}" (ports >= 2)

    @property
    def pinned(self) -> list[int]:
        """Return the cores it is pinned to."""
        return _USABLE[: max(1, self.cores)]

    @property
    def processes(self) -> int:
        """Return how many processes its group holds once up: the workers and their supervisor."""
        return 1 if self.workers == 1 else self.workers + 1


class RunningServer:
    """One started server process group."""

    def __init__(self, spec: ServerSpec, log: Path, ports: Sequence[int] = ()) -> None:
        self.spec = spec
        # Given the ports of a server it replaces (a restart); else free ones.
        self.ports = list(ports) or [free_port() for _ in range(spec.ports)]
        self.url = f"http://127.0.0.1:{self.ports[0]}"
        # Where the gRPC kinds are sent, if it takes them.
        self.grpc_target = f"127.0.0.1:{self.ports[1]}" if spec.grpc else None
        argv = [self._fill(arg) for arg in spec.argv]
        env = {**os.environ, **{k: self._fill(v) for k, v in spec.env.items()}}
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec.cwd or REPO_ROOT,
                start_new_session=True,  # its own group: workers it forks are stopped with it
                preexec_fn=_pinning(spec.pinned) if _SPLIT else None,
            )

    def _fill(self, text: str) -> str:
        for i, port in enumerate(self.ports):
            text = text.replace(f"{{port{i}}}", str(port))
        return text.replace("{port}", str(self.ports[0]))

    def wait_ready(self) -> None:
        """Wait until the ready endpoint answers 200; raise with the log's tail if it dies.

        With several workers, until all of them run and the endpoint answered 200
        on ``READY_PER_WORKER`` fresh connections per worker in a row: the kernel
        spreads connections over the workers, and one still loading its models
        answers 404, so every worker has all but surely been asked.
        """
        deadline = time.monotonic() + self.spec.start_timeout
        wanted = 1 if self.spec.workers == 1 else READY_PER_WORKER * self.spec.workers
        answered = 0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited at start:\n{self.log_tail()}")
            up = len(self.cpu_by_process()) >= self.spec.processes
            answered = answered + 1 if up and self._answers_ready() else 0
            if answered >= wanted:
                return
            time.sleep(0.2 if answered == 0 else 0.01)
        raise RuntimeError(f"{self.spec.name} not ready in time:\n{self.log_tail()}")

    def _answers_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + self.spec.ready_path, timeout=2) as reply:
                return bool(reply.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the server's output."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """Return the CPU time (user + system) used so far by the server's process group."""
        return sum(self.cpu_by_process().values())

    def cpu_by_process(self) -> dict[int, float]:
        """Return the CPU time (user + system) used so far by each live process of its group.

        The group is the server's process and every process it started (a
        supervisor's workers), read from ``/proc/<pid>/stat``; a process that
        has exited is no longer counted.
        """
        used: dict[int, float] = {}
        group = self.process.pid
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == group:  # field 5 of stat, the process group
                used[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime
        return used

    def settle(self, cap: float) -> tuple[float, bool]:
        """Wait until the server is idle, at most ``cap`` seconds; return (waited, cap hit).

        Idle: its process group used at most ``IDLE_SHARE`` of a core per worker
        over the last ``IDLE_WINDOW`` seconds, so no queued request is still
        being worked on (an idle worker of ``--workers N`` keeps beating: about
        4% of a core each, in bursts).
        """
        began = time.monotonic()
        before = self.cpu_seconds()
        while True:
            time.sleep(IDLE_WINDOW)
            now = self.cpu_seconds()
            waited = time.monotonic() - began
            if now - before <= IDLE_SHARE * self.spec.workers * IDLE_WINDOW + 1e-9:
                return waited, False
            if waited >= cap or self.process.poll() is not None:
                return waited, True
            before = now

    def batch_counters(self, model: str) -> tuple[int, int] | None:
        """Return (rows, batches) executed so far for ``model``, from turnout's /metrics."""
        if not self.spec.reports_batches:
            return None
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as reply:
            text = reply.read().decode()
        rows = batches = 0.0
        label = f'model="{model}"'
        for line in text.splitlines():
            if label not in line:
                continue
            if line.startswith("turnout_batch_rows_sum"):
                rows += float(line.rsplit(" ", 1)[1])
            elif line.startswith("turnout_batch_rows_count"):
                batches += float(line.rsplit(" ", 1)[1])
        return int(rows), int(batches)

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)


def _pinning(cores: Sequence[int]) -> Callable[[], None]:
    """Return what pins a server, in its process before it starts, to ``cores``."""

    def pin() -> None:
        os.sched_setaffinity(0, set(cores))

    return pin


def python_module(module: str, *args: str) -> tuple[str, ...]:
    """Return the argv that runs ``python -m module args`` with this interpreter."""
    return (sys.executable, "-m", module, *args)


def start_all(
    specs: Sequence[ServerSpec], logdir: Path, say: Callable[[str], None]
) -> list[RunningServer]:
    """Start every server, then wait for each; stop them all if one fails."""
    servers = [RunningServer(spec, logdir / f"{_slug(spec.name)}.log") for spec in specs]
    try:
        for server in servers:
            server.wait_ready()
            say(f"  {server.spec.name}: ready at {server.url}")
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
