"""``python -m benchmarks fleet``: turnout replicas behind nginx, one Redis, through failures.

The fleet of ``docs/deploy.md`` on one machine: N replicas of
``turnout serve --workers W`` on their own loopback ports, sharing one real
Redis (``--state``) and one artifacts directory (a ReadWriteMany volume's
stand-in), behind a real nginx that balances inference over them and passes
a request a replica fails to the next (``proxy_next_upstream``). Steady
closed-loop load runs through nginx the whole time, and every answer is kept
(when, which status, which replicas nginx tried, which version answered).
Four scenarios, in order, each with its figure:

* ``rolling restart``: each replica in turn gets SIGTERM (as Kubernetes
  sends it), drains, and is started again; target: no failed request;
* ``kill``: the replica whose worker leads rollouts is SIGKILLed, all its
  processes at once; the figures are the requests that failed, how long
  after the kill requests still failed or were slowed by the dead replica
  (target: within 1 s, nginx routing around it), and how long until another
  process led;
* ``canary``: a canary of v2 started through one replica's admin API is
  judged on every replica's traffic and promoted (or rolled back) once, by
  the one leader: the judged request counts are set beside the most that
  any one replica served in the step;
* ``routing``: the active version is switched through one replica's admin
  API (a different one each time), and every replica is asked directly
  over fresh connections (so every worker is reached) until it answers
  with the new version ten times in a row; target: within 1 s everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from benchmarks.daemons import UPSTREAM_HEADER, Nginx, RedisServer, find_binary
from benchmarks.servers import RunningServer, ServerSpec, python_module, usable_cores
from turnout import AdminClient

__all__ = [
    "Answer",
    "Fleet",
    "FleetSettings",
    "Load",
    "Report",
    "canary",
    "kill_the_leader",
    "main",
    "rolling_restart",
    "routing_change",
    "run_scenarios",
]

MODEL = "bc"
TOKEN = "fleet-benchmark-admin-token"


@dataclass(frozen=True)
class FleetSettings:
    """How big the fleet is and how long each scenario runs."""

    replicas: int = 3
    workers: int = 2
    concurrency: int = 16  # closed-loop clients sending through nginx
    settle: float = 3.0  # seconds of steady load before and after each event
    canary_min_requests: int = 500  # per step, fleet-wide
    routing_changes: int = 20
    shutdown_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.replicas < 2:
            raise ValueError("a fleet that routes around a dead replica needs 2 or more")
        for name in ("workers", "concurrency", "canary_min_requests", "routing_changes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more")
        if self.settle <= 0 or self.shutdown_timeout <= 0:
            raise ValueError("settle and shutdown_timeout must be positive")


@dataclass(frozen=True)
class Answer:
    """One request sent through nginx: when, its status (0: no answer), who answered what."""

    started: float  # wall-clock seconds, comparable with the control state's timestamps
    ended: float
    status: int
    upstreams: tuple[str, ...]  # every replica nginx tried, the one that answered last
    version: str | None

    @property
    def failed(self) -> bool:
        """True if the client got no 200."""
        return self.status != 200

    @property
    def retried(self) -> bool:
        """True if nginx had to pass the request on to another replica."""
        return len(self.upstreams) > 1


def _training_set() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return data.data.astype(np.float32), data.target


def model_files(directory: Path) -> dict[str, Path]:
    """Write v1 and v2 of the fleet's model (two logistic regressions) as ONNX files."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from turnout.core.execution.convert import load_model

    X, y = _training_set()
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for version, strength in (("v1", 1.0), ("v2", 0.3)):
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=500))
        onnx_bytes = load_model(pipeline.fit(X, y)).onnx_bytes
        assert onnx_bytes is not None
        files[version] = directory / f"{version}.onnx"
        files[version].write_bytes(onnx_bytes)
    return files


def infer_body() -> dict[str, Any]:
    """One V2 inference request: a row of the training set."""
    X, _ = _training_set()
    row = [float(x) for x in X[0]]
    return {"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}


def served_version(body: bytes) -> str | None:
    """The version a V2 inference answer names (``model_version``); None if it names none."""
    try:
        version = json.loads(body).get("model_version")
    except (ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


class Replica:
    """One ``turnout serve --workers W`` of the fleet, kept on its ports across restarts."""

    def __init__(self, index: int, spec: ServerSpec, logs: Path) -> None:
        self.index = index
        self.spec = spec
        self.logs = logs
        self.starts = 0
        self.server = self._start(())

    def _start(self, ports: Sequence[int]) -> RunningServer:
        self.starts += 1
        log = self.logs / f"replica-{self.index}.{self.starts}.log"
        return RunningServer(self.spec, log, ports)

    @property
    def address(self) -> str:
        """host:port of its inference API, as nginx names it."""
        return f"127.0.0.1:{self.server.ports[0]}"

    @property
    def url(self) -> str:
        """Its inference API."""
        return self.server.url

    @property
    def admin_url(self) -> str:
        """Its admin API."""
        return f"http://127.0.0.1:{self.server.ports[1]}"

    async def wait_ready(self) -> None:
        """Wait until every worker of it answers ready."""
        await asyncio.to_thread(self.server.wait_ready)

    async def terminate(self, timeout: float) -> int:
        """Send SIGTERM to the supervisor, as the kubelet does to PID 1; return its exit status."""
        self.server.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.server.process.wait, timeout)

    def kill(self) -> None:
        """SIGKILL every process of the replica at once, as a node that dies would."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.server.process.pid, signal.SIGKILL)
        self.server.process.wait(timeout=10)

    def restart(self) -> None:
        """Start it again on the same ports (the previous one must have exited)."""
        self.server = self._start(self.server.ports)

    def stop(self) -> None:
        """Stop it for good, whatever state it is in."""
        self.server.stop()


class Fleet:
    """Redis, the replicas and nginx in front, started together and stopped together."""

    def __init__(
        self, settings: FleetSettings, workdir: Path, *, redis_binary: str, nginx_binary: str
    ) -> None:
        self.settings = settings
        self.workdir = workdir
        self.redis = RedisServer(redis_binary, workdir / "redis")
        self.nginx_binary = nginx_binary
        self.replicas: list[Replica] = []
        self.nginx: Nginx | None = None
        self.files: dict[str, Path] = {}

    def spec(self) -> ServerSpec:
        """How each replica is started: the Kubernetes base's settings, on loopback."""
        s = self.settings
        argv = python_module(
            "turnout", "serve",
            "--host", "127.0.0.1", "--port", "{port}", "--admin-port", "{port1}",
            "--workers", str(s.workers), "--state", self.redis.url,
            "--artifacts", str(self.workdir / "artifacts"),
            "--model", f"{MODEL}:v1={self.files['v1']}",
            "--shutdown-timeout", f"{s.shutdown_timeout:g}",
        )  # fmt: skip
        return ServerSpec(
            name="turnout replica",
            argv=argv,
            env={"TURNOUT_ADMIN_TOKEN": TOKEN},
            ports=2,
            workers=s.workers,
            cores=len(usable_cores()),
            start_timeout=90.0,
        )

    async def start(self) -> None:
        """Start Redis, the first replica (which deploys v1), the others, then nginx."""
        self.files = model_files(self.workdir / "models")
        self.redis.start()
        spec, logs = self.spec(), self.workdir / "logs"
        self.replicas.append(Replica(0, spec, logs))
        await self.replicas[0].wait_ready()
        self.replicas += [Replica(i, spec, logs) for i in range(1, self.settings.replicas)]
        await asyncio.gather(*(r.wait_ready() for r in self.replicas[1:]))
        self.nginx = Nginx(self.nginx_binary, self.workdir / "nginx", self.upstreams())
        self.nginx.start()

    def upstreams(self) -> list[str]:
        """Every replica's inference address."""
        return [r.address for r in self.replicas]

    @property
    def url(self) -> str:
        """nginx, the fleet's one address."""
        assert self.nginx is not None
        return self.nginx.url

    def replica_at(self, url: str) -> Replica:
        """The replica whose inference API is ``url`` (a worker's announced ``listen``)."""
        (found,) = [r for r in self.replicas if url.rstrip("/") == r.url]
        return found

    async def _leading(self, asked: Replica) -> list[Replica]:
        """The replica of each process that says it leads, in the heartbeats ``asked`` reads."""
        async with AdminClient(asked.admin_url, TOKEN) as admin:
            processes = (await admin.fleet())["processes"]
        return [self.replica_at(p["listen"]) for p in processes.values() if p.get("leads")]

    async def leader(self, among: Sequence[Replica] | None = None) -> Replica | None:
        """The replica whose worker leads rollouts now, by the fleet's heartbeats; None if none.

        ``among``: only these replicas count (a dead one's heartbeat outlives it a while).
        """
        among = among or self.replicas
        alive = [r for r in await self._leading(among[0]) if r in among]
        return alive[0] if alive else None

    async def leaders(self) -> int:
        """How many processes say they lead (one, in a sound fleet)."""
        return len(await self._leading(self.replicas[0]))

    def close(self) -> None:
        """Stop everything started."""
        if self.nginx is not None:
            self.nginx.stop()
        for replica in self.replicas:
            replica.stop()
        self.redis.stop()

    def logs(self, lines: int = 20) -> str:
        """The end of every replica's log and nginx's, for a scenario that went wrong."""
        parts = [f"replica {r.index}:\n{r.server.log_tail(lines)}" for r in self.replicas]
        if self.nginx is not None:
            parts.append(f"nginx:\n{self.nginx.error_log()[-3000:]}")
        return "\n\n".join(parts)


class Load:
    """Closed-loop clients sending inference through nginx, every answer kept."""

    def __init__(self, url: str, concurrency: int) -> None:
        self.aim(url)
        self.concurrency = concurrency
        self.answers: list[Answer] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def aim(self, url: str) -> None:
        """Send the next requests to ``url`` (nginx's, or one of its other balances)."""
        self.url = f"{url}/v2/models/{MODEL}/infer"

    async def __aenter__(self) -> Load:
        # Room for a second address's connections while the first one's are still pooled.
        connector = aiohttp.TCPConnector(limit=2 * self.concurrency)
        timeout = aiohttp.ClientTimeout(total=15)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.concurrency)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        assert self._session is not None
        await self._session.close()

    async def _client(self) -> None:
        assert self._session is not None
        body = infer_body()
        while not self._stop.is_set():
            started = time.time()
            status, upstreams, version = 0, "", None
            try:
                async with self._session.post(self.url, json=body) as response:
                    status = response.status
                    upstreams = response.headers.get(UPSTREAM_HEADER, "")
                    version = served_version(await response.read())
            except (aiohttp.ClientError, TimeoutError):
                pass
            tried = tuple(u.strip() for u in upstreams.split(",") if u.strip())
            self.answers.append(Answer(started, time.time(), status, tried, version))

    def between(self, began: float, ended: float) -> list[Answer]:
        """The requests sent from ``began`` to ``ended`` (wall-clock seconds)."""
        return [a for a in self.answers if began <= a.started < ended]


@dataclass(frozen=True)
class Report:
    """One scenario's outcome: the figures, the target and whether it was met."""

    scenario: str
    requests: int
    failed: int
    retried: int
    figure: str
    target: str
    met: bool
    facts: dict[str, Any] = field(default_factory=dict)
    failures: dict[int, int] = field(default_factory=dict)  # by status; 0: no answer at all

    @classmethod
    def of(
        cls,
        scenario: str,
        answers: Sequence[Answer],
        figure: str,
        target: str,
        met: bool,
        facts: dict[str, Any],
    ) -> Report:
        """The report of a scenario whose requests were ``answers``; met only if none failed."""
        failures = dict(collections.Counter(a.status for a in answers if a.failed))
        return cls(
            scenario,
            len(answers),
            sum(failures.values()),
            sum(a.retried for a in answers),
            figure,
            target,
            met and not failures,
            facts,
            failures,
        )


async def rolling_restart(fleet: Fleet, load: Load) -> Report:
    """Restart every replica in turn, as a rolling update does: SIGTERM, drain, start, ready."""
    began = time.time()
    await asyncio.sleep(fleet.settings.settle)
    seconds, statuses = [], []
    for replica in fleet.replicas:
        down = time.monotonic()
        statuses.append(await replica.terminate(fleet.settings.shutdown_timeout + 10))
        replica.restart()
        await replica.wait_ready()
        seconds.append(time.monotonic() - down)
    await asyncio.sleep(fleet.settings.settle)
    return Report.of(
        "rolling restart",
        load.between(began, time.time()),
        f"{len(seconds)} replicas restarted, {statistics.mean(seconds):.1f} s each;"
        f" exit status {', '.join(map(str, statuses))}",
        "0 failed",
        set(statuses) == {0},
        {"restart_seconds": seconds, "exit_statuses": statuses},
    )


async def kill_the_leader(fleet: Fleet, load: Load) -> Report:
    """SIGKILL the leading replica under load; see how soon nginx and the lease route around it."""
    began = time.time()
    await asyncio.sleep(fleet.settings.settle)
    victim = await fleet.leader() or fleet.replicas[-1]
    before = load.between(began, time.time())
    p99 = float(np.percentile([a.ended - a.started for a in before], 99))
    slow = max(5 * p99, p99 + 0.05)
    killed = time.time()
    await asyncio.to_thread(victim.kill)
    others = [r for r in fleet.replicas if r is not victim]
    new_leader = None
    while new_leader is None and time.time() - killed < 30:
        await asyncio.sleep(0.05)
        new_leader = await fleet.leader(among=others)
    takeover = time.time() - killed
    await asyncio.sleep(fleet.settings.settle)
    after = load.between(killed - 0.5, time.time())  # with those in flight at the kill
    # Routing around it costs a request that failed, or one nginx sent to the dead replica
    # first and that was slow for it (a refused connection, retried at once, costs nothing).
    dead = victim.address
    disturbed = [
        a.ended - killed
        for a in after
        if a.failed or (a.upstreams[:1] == (dead,) and a.ended - a.started > slow)
    ]
    recovered = max(disturbed, default=0.0)
    tried_dead = sum(1 for a in after if a.started >= killed and dead in a.upstreams)
    p99_after = float(np.percentile([a.ended - a.started for a in after], 99))
    victim.restart()
    await victim.wait_ready()
    return Report.of(
        "kill the leader's replica",
        after,
        f"failed or slowed (> {slow * 1e3:.0f} ms) by the dead replica until {recovered:.2f} s"
        f" after the kill ({tried_dead} requests tried it later, each passed on at once);"
        f" p99 {p99 * 1e3:.0f} ms before, {p99_after * 1e3:.0f} ms after;"
        f" another replica led after {takeover:.1f} s",
        "routed around within 1 s",
        recovered <= 1.0 and new_leader is not None,
        {
            "recovered_seconds": recovered,
            "takeover_seconds": takeover,
            "slow_seconds": slow,
            "tried_dead_replica": tried_dead,
            "p99_before": p99,
            "p99_after": p99_after,
        },
    )


_JUDGED = re.compile(r"step \d+ \(\d+%\) passed: (\d+) requests")


async def canary(fleet: Fleet, load: Load) -> Report:
    """Start a canary of v2 through a replica's admin API while the leader's gets no traffic.

    The load moves to nginx's balance over every replica but the leader's,
    as for a drained node; so every request the canary is judged on was
    served by another replica, and a judgement that counts them was made on
    the fleet's numbers, not the leader's own.
    """
    s = fleet.settings
    leader = await fleet.leader()
    assert leader is not None
    assert fleet.nginx is not None
    entry = next(r for r in fleet.replicas if r is not leader)
    load.aim(fleet.nginx.url_without(leader.address))
    await asyncio.sleep(0.5)  # requests already sent to the leader are answered
    began = time.time()
    async with AdminClient(entry.admin_url, TOKEN) as admin:
        await admin.deploy(MODEL, "v2", fleet.files["v2"].read_bytes())
        # Deployed once, loaded by every worker of every replica before any routes to it.
        await admin.request(
            "POST",
            f"/admin/models/{MODEL}/canary",
            {
                "candidate": "v2",
                "steps": [0.3, 1.0],
                "min_requests": s.canary_min_requests,
                "max_latency_ratio": 5.0,  # two alike models; judged on errors foremost
            },
        )
        deadline = time.monotonic() + 120
        events: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            events = (await admin.request("GET", f"/admin/models/{MODEL}/rollouts"))["events"]
            if events and events[-1]["event"] in ("promoted", "rolled_back"):
                break
            await asyncio.sleep(0.1)
    leaders = await fleet.leaders()
    still_leads = await fleet.leader() is leader
    ended = time.time()
    load.aim(fleet.url)
    mine = [e for e in events if datetime.fromisoformat(e["at"]).timestamp() >= began - 1]
    names = [e["event"] for e in mine]
    outcome = names[-1] if names else "none"
    judged = [int(m[1]) for e in mine if (m := _JUDGED.search(e["reason"]))]
    answers = load.between(began, ended)
    by_leader = sum(1 for a in answers if leader.address in a.upstreams)
    once = names.count(outcome) == 1 and names.count("started") == 1
    fleet_wide = len(judged) == 2 and min(judged) >= s.canary_min_requests and by_leader == 0
    return Report.of(
        "canary through one replica",
        answers,
        f"{outcome} once ({' → '.join(names)}) by {leaders} leader, whose replica served"
        f" {by_leader} requests; steps judged on {judged} requests the others served",
        "one leader, fleet-wide judgement",
        outcome == "promoted" and once and leaders == 1 and still_leads and fleet_wide,
        {"events": names, "judged": judged, "served_by_leader": by_leader, "leaders": leaders},
    )


async def _switched(session: aiohttp.ClientSession, replica: Replica, version: str) -> float:
    """Ask ``replica`` until it answers ``version`` 10 times in a row; return when the run began."""
    body, run_began, in_a_row = infer_body(), 0.0, 0
    deadline = time.monotonic() + 10
    while in_a_row < 10:
        if time.monotonic() > deadline:
            raise TimeoutError(f"replica {replica.index} never answered with {version}")
        asked = time.time()
        async with session.post(f"{replica.url}/v2/models/{MODEL}/infer", json=body) as answer:
            fresh = answer.status == 200 and served_version(await answer.read()) == version
        if fresh and in_a_row == 0:
            run_began = asked
        in_a_row = in_a_row + 1 if fresh else 0
    return run_began


async def routing_change(fleet: Fleet, load: Load) -> Report:
    """Switch the active version through one replica after another; time it on every replica."""
    began = time.time()
    delays: list[float] = []
    connector = aiohttp.TCPConnector(force_close=True)  # fresh: every worker gets asked
    async with aiohttp.ClientSession(connector=connector) as session:
        for change in range(fleet.settings.routing_changes):
            entry = fleet.replicas[change % len(fleet.replicas)]
            version = "v1" if change % 2 == 0 else "v2"
            async with AdminClient(entry.admin_url, TOKEN) as admin:
                changed = time.time()
                await admin.request("PUT", f"/admin/models/{MODEL}/active", {"version": version})
            seen = await asyncio.gather(*(_switched(session, r, version) for r in fleet.replicas))
            delays.append(max(max(seen) - changed, 0.0))
    p50, p99 = np.percentile(delays, [50, 99])
    return Report.of(
        "routing change",
        load.between(began, time.time()),
        f"{len(delays)} changes in force on every replica: p50 {p50 * 1e3:.0f} ms,"
        f" p99 {p99 * 1e3:.0f} ms, max {max(delays) * 1e3:.0f} ms",
        "every replica within 1 s",
        max(delays) <= 1.0,
        {"delays": delays},
    )


SCENARIOS: tuple[Callable[[Fleet, Load], Any], ...] = (
    rolling_restart,
    kill_the_leader,
    canary,
    routing_change,
)


@contextlib.asynccontextmanager
async def running_fleet(
    settings: FleetSettings, workdir: Path, *, redis_binary: str, nginx_binary: str
) -> AsyncIterator[Fleet]:
    """Start a fleet; stop every process of it on the way out, whatever happened."""
    fleet = Fleet(settings, workdir, redis_binary=redis_binary, nginx_binary=nginx_binary)
    try:
        await fleet.start()
        yield fleet
    finally:
        await asyncio.to_thread(fleet.close)


async def run_scenarios(
    fleet: Fleet, say: Callable[[str], None] = lambda line: None
) -> list[Report]:
    """Run every scenario in order under one steady load through nginx."""
    reports = []
    async with Load(fleet.url, fleet.settings.concurrency) as load:
        for scenario in SCENARIOS:
            say(f"  {scenario.__name__.replace('_', ' ')}...")
            reports.append(await scenario(fleet, load))
    return reports


def table(reports: Sequence[Report]) -> list[str]:
    """The reports as a Markdown table."""
    lines = [
        "| Scenario | Requests | Failed | Retried by nginx | Figure | Target | Met |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for r in reports:
        met = "yes" if r.met else "**no**"
        statuses = ", ".join(f"{status or 'no answer'}: {n}" for status, n in r.failures.items())
        failed = f"{r.failed} ({statuses})" if r.failures else "0"
        lines.append(
            f"| {r.scenario} | {r.requests} | {failed} | {r.retried} | {r.figure}"
            f" | {r.target} | {met} |"
        )
    return lines


def _binary(name: str) -> str:
    """The path of a Debian package's daemon; exit naming the package if it is missing."""
    found = find_binary(name)
    if found is None:
        raise SystemExit(f"{name} is missing: apt-get install -y {name}")
    return found


def _parser() -> argparse.ArgumentParser:
    defaults = FleetSettings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks fleet",
        description="turnout replicas behind nginx sharing one Redis: rolling restart,"
        " SIGKILL, a canary and routing changes under steady load.",
    )
    parser.add_argument("--replicas", type=int, default=defaults.replicas)
    parser.add_argument("--workers", type=int, default=defaults.workers)
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--settle", type=float, default=defaults.settle,
                        help="seconds of steady load around each event")  # fmt: skip
    parser.add_argument("--canary-min-requests", type=int, default=defaults.canary_min_requests)
    parser.add_argument("--routing-changes", type=int, default=defaults.routing_changes)
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the fleet's files and logs here")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for the report (benchmarks/results)")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fleet benchmark, print its table and write the report."""
    import tempfile

    from benchmarks.machine import RESULTS_DIR, load_average, machine_info, stamp, write_atomic

    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = FleetSettings(
            replicas=args.replicas,
            workers=args.workers,
            concurrency=args.concurrency,
            settle=args.settle,
            canary_min_requests=args.canary_min_requests,
            routing_changes=args.routing_changes,
        )
    except ValueError as exc:
        parser.error(str(exc))
    binaries = {"redis_binary": _binary("redis-server"), "nginx_binary": _binary("nginx")}
    load_at_start = load_average()
    nginx_version = subprocess.run(
        [binaries["nginx_binary"], "-v"], capture_output=True, text=True
    ).stderr.strip()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    async def run(workdir: Path) -> list[Report]:
        say(f"starting {settings.replicas} replicas x {settings.workers} workers in {workdir}...")
        async with running_fleet(settings, workdir, **binaries) as fleet:
            return await run_scenarios(fleet, say)

    if args.workdir is not None:
        reports = asyncio.run(run(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="turnout-fleet-") as workdir:
            reports = asyncio.run(run(Path(workdir)))
    rows = table(reports)
    print("\n".join(rows))
    facts = [*machine_info(load_at_start), ("nginx", nginx_version)]
    report = "\n".join(
        [
            "# Fleet: turnout replicas behind nginx, one Redis",
            "",
            f"`{' '.join(['python -m benchmarks fleet', *(argv or sys.argv[2:])])}`",
            "",
            f"{settings.replicas} replicas x {settings.workers} workers,"
            f" {settings.concurrency} closed-loop clients through nginx.",
            "",
            *rows,
            "",
            *(f"- {name}: {value}" for name, value in facts),
            "",
        ]
    )
    out = args.out or RESULTS_DIR
    path = out / f"fleet-{stamp()}.md"
    write_atomic(path, report)
    print(f"\nreport: {path}", file=sys.stderr)
    return 0 if all(r.met for r in reports) else 1
