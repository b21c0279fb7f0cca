"""``python -m benchmarks http``: turnout over HTTP beside the aiohttp ceiling and MLServer.

Every server under test runs at once, each in its own process pinned to one
core, the load generator on the other; within a cell the servers take turns
in short slices (round-robin), so noise from the shared machine lands on all
of them alike. Sections:

* ``closed``: closed loop at each concurrency, for each request kind (HTTP,
  and ``grpc-raw-1`` over gRPC to the ceiling and the turnout servers that
  serve it);
* ``open``: open loop at fixed rates (V2 JSON, one row), latency timed from
  each request's due time (no coordinated omission);
* ``routing``: one turnout server holding a model per routing setup (active,
  50/50 weighted, sticky, 100% shadow, shadow to a slow version, shadow to a
  failing version), measured side by side;
* ``workers`` (``--workers 1,2``): ``turnout serve --workers N`` for each N,
  each on every usable core, closed loop at concurrency 64 (V2 JSON, one
  row), side by side; its CPU is the supervisor's and all its workers'.

The server that goes first rotates from one round to the next, across cells
and sections. After every slice the harness waits until the server measured
is idle again (capped; see ``servers.RunningServer.settle``), so work still
queued in one server never runs while the next one is measured.

Once every server has stopped, bare ONNX Runtime is timed on the servers'
core at each batch size turnout formed: each turnout cell's own cost and
share of the one-core limit come from it (``benchmarks.limit``).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from benchmarks.artifacts import MODEL, ROUTING_MODELS, Artifacts, build_artifacts
from benchmarks.eventloop import LOOPS, default_loop
from benchmarks.gitrefs import export_sources, known_ref
from benchmarks.grpcload import closed_loop as grpc_closed_loop
from benchmarks.grpcload import one_call
from benchmarks.limit import OrtCost, batch_sizes, measure_ort
from benchmarks.loadgen import closed_loop, open_loop
from benchmarks.payloads import KINDS, Payload, build_payload
from benchmarks.peers import mlserver_specs, mlserver_version
from benchmarks.servers import (
    SERVER_CPU,
    RunningServer,
    ServerSpec,
    machine_cpu_seconds,
    pin_generator,
    python_module,
    start_all,
    usable_cores,
)
from benchmarks.stats import Window, merge
from benchmarks.wrk import INSTALL_HINT, WrkRunner, wrk_path, wrk_version

__all__ = ["CEILING", "Cell", "Run", "Settings", "main", "parse_args"]

T = TypeVar("T")

CEILING = "aiohttp ceiling"
OFF = "turnout batching off"
ADAPTIVE = "turnout adaptive"
THREADED = "turnout adaptive, worker thread"  # inline batches off: the inline lever's other side
ROUTER = "turnout routing"
WORKDIR = Path(__file__).resolve().parent / ".work"
SLOW_SHADOW_SECONDS = 0.05  # per batch: far slower than the primary's ~0.3 ms
SECTIONS = ("closed", "open", "routing", "workers")
DEFAULT_SECTIONS = ("closed", "open", "routing")  # workers: only when asked for
WORKERS = (1, 2)  # the workers section's counts, unless --workers says
WORKERS_CONCURRENCY = (64,)
SERVERS = ("ceiling", "off", "adaptive", "threaded", "mlserver")
# "threaded" (adaptive with every batch on the worker thread) only when asked for:
# it measures one lever, and each server costs every cell its slices.
DEFAULT_SERVERS = ("ceiling", "off", "adaptive", "mlserver")
SETTLE_CAP = 30.0  # seconds a server may take to go idle after a slice
QUICK_SETTLE_CAP = 3.0  # quick mode, after a slice; between sections it is SECTION_SETTLE_CAP
SECTION_SETTLE_CAP = 30.0
ORT_SECONDS = 2.0  # raw ONNX Runtime, timed seconds per batch size
QUICK_ORT_SECONDS = 0.5
LIMITED = ("closed", "routing", "workers")  # the sections whose turnout cells get a limit
_SERVER_KEYS = {CEILING: "ceiling", OFF: "off", ADAPTIVE: "adaptive", THREADED: "threaded"}


@dataclass(frozen=True)
class Settings:
    """What one run measures."""

    seconds: float  # measured seconds per server per cell, in ``rounds`` slices
    rounds: int
    warmup: float
    concurrency: tuple[int, ...]
    rates: tuple[float, ...]
    kinds: tuple[str, ...]
    routing_concurrency: tuple[int, ...]
    sections: tuple[str, ...]
    loop: str
    generator: str  # "wrk" or "builtin"
    servers: tuple[str, ...]  # which of SERVERS to run
    baselines: tuple[str, ...]  # git refs whose turnout adaptive runs beside this tree's
    asyncio_too: bool  # also turnout adaptive on the asyncio loop
    trees: int
    depth: int
    save: bool
    out: Path | None
    workdir: Path
    quick: bool
    profile: bool
    settle_cap: float = SETTLE_CAP
    workers: tuple[int, ...] = ()  # the workers section: turnout serve --workers N, each N
    workers_concurrency: tuple[int, ...] = WORKERS_CONCURRENCY


@dataclass(frozen=True)
class Cell:
    """One measured cell: a section, request kind, server and load (concurrency or rate)."""

    section: str
    kind: str
    server: str
    load: float
    window: Window


@dataclass
class Run:
    """Everything a run measured, and what it could not."""

    settings: Settings
    cells: list[Cell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    profile: str | None = None  # py-spy summary of turnout adaptive at concurrency 64
    usable_cores: int | None = None  # before the generator pinned itself
    turns: int = 0  # rounds started so far: who goes first rotates with it
    ort: OrtCost | None = None  # raw ONNX Runtime's CPU per call, at the batch sizes formed

    def order(self, items: list[T]) -> list[T]:
        """Return ``items`` in this round's order, the first one moving on each round."""
        ordered = _rotated(items, self.turns)
        self.turns += 1
        return ordered


def serve_turnout(repository: Path, loop: str, *args: str) -> tuple[str, ...]:
    """Return the argv of ``turnout serve --repository`` on ``loop`` (benchmarks.serve_turnout)."""
    return python_module(
        "benchmarks.serve_turnout",
        "--repository",
        str(repository),
        "--port",
        "{port}",
        "--loop",
        loop,
        *args,
    )


def turnout_specs(artifacts: Artifacts, loop: str) -> list[ServerSpec]:
    """Return the ceiling and turnout: batching off, adaptive, adaptive on the worker thread.

    Each serves gRPC too (``--grpc-port``, its second port), so its gRPC and
    HTTP rows come from one process on one core: the ceiling's from a bare
    grpc.aio server beside its aiohttp one.
    """

    def turnout(name: str, repository: Path) -> ServerSpec:
        argv = serve_turnout(repository, loop, "--grpc-port", "{port1}")
        return ServerSpec(name, argv, reports_batches=True, ports=2, grpc=True)

    ceiling = python_module(
        "benchmarks.ceiling", "--port", "{port}", "--grpc-port", "{port1}", "--loop", loop
    )
    return [
        ServerSpec(CEILING, ceiling, ports=2, grpc=True),
        turnout(OFF, artifacts.off_repo),
        turnout(ADAPTIVE, artifacts.adaptive_repo),
        turnout(THREADED, artifacts.threaded_repo),
    ]


def baseline_spec(artifacts: Artifacts, loop: str, ref: str, workdir: Path) -> ServerSpec:
    """Return turnout adaptive run from the sources of git ``ref``: before/after, side by side."""
    src = export_sources(ref, workdir / f"baseline-{ref.replace('/', '-')}")
    name = f"{ADAPTIVE} @{ref}"
    # No --grpc-port: a ref from before d1e0892 has no gRPC service, and would not start.
    argv = serve_turnout(own_copy(artifacts.adaptive_repo, name), loop)
    # The exported sources come first on the path, before the installed (editable) turnout.
    return ServerSpec(name, argv, reports_batches=True, env={"PYTHONPATH": str(src)})


def own_copy(repo: Path, name: str) -> Path:
    """Return a fresh copy of ``repo`` for one more server: one server opens a repository."""
    import shutil

    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    copy = repo.with_name(f"{repo.name}-{slug}")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(repo, copy)
    return copy


def workers_name(count: int) -> str:
    """Return the report's name of ``turnout serve --workers count``."""
    return f"{ADAPTIVE}, {count} worker{'s' if count > 1 else ''}"


def workers_specs(artifacts: Artifacts, loop: str, counts: Sequence[int]) -> list[ServerSpec]:
    """Return turnout adaptive under ``turnout serve --workers N`` for each N, each its own copy.

    Each may use every usable core, whatever N: the points differ in their
    workers only, and one worker is not kept off the second core that its
    model thread can partly use. Ready once every worker serves the model:
    one still loading it answers 404. Rows per batch are the fleet's: any
    worker's /metrics reports every worker, as last published in its
    heartbeat (up to a second old).
    """
    specs = []
    for count in counts:
        name = workers_name(count)
        argv = serve_turnout(own_copy(artifacts.adaptive_repo, name), loop, "--workers", str(count))
        ready = f"/v2/models/{MODEL}/ready"
        specs.append(
            ServerSpec(
                name,
                argv,
                ready_path=ready,
                reports_batches=True,
                workers=count,
                cores=len(usable_cores()),
            )
        )
    return specs


def routing_spec(artifacts: Artifacts, loop: str) -> ServerSpec:
    """Return the turnout server of the routing section, its shadows made slow and failing."""
    argv = serve_turnout(
        artifacts.routing_repo,
        loop,
        "--fault",
        f"shadow_slow/v2=slow:{SLOW_SHADOW_SECONDS}",
        "--fault",
        "shadow_fail/v2=fail",
    )
    return ServerSpec(ROUTER, argv, reports_batches=True)


class Measurer:
    """Runs one generator slice against one server and accounts CPU and batches around it."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self._runners: dict[tuple[str, str, str], WrkRunner] = {}
        self.settled: dict[str, list[float]] = {}  # server -> seconds waited after each slice
        self.capped: dict[str, int] = {}  # server -> slices after which it never went idle

    def closed(
        self,
        server: RunningServer,
        model: str,
        payload: Payload,
        tag: str,
        concurrency: int,
        seconds: float,
    ) -> Window:
        """Measure a closed-loop slice."""
        return self._around(
            server, model, lambda: self._closed(server, payload, tag, concurrency, seconds)
        )

    def open(
        self, server: RunningServer, model: str, payload: Payload, rate: float, seconds: float
    ) -> Window:
        """Measure an open-loop slice."""
        return self._around(
            server, model, lambda: asyncio.run(open_loop(server.url, payload, rate, seconds))
        )

    def _closed(
        self, server: RunningServer, payload: Payload, tag: str, concurrency: int, seconds: float
    ) -> Window:
        if payload.grpc:  # wrk speaks HTTP/1.1 only: gRPC has its own client, whatever the setting
            assert server.grpc_target is not None
            return asyncio.run(grpc_closed_loop(server.grpc_target, payload, concurrency, seconds))
        if self.settings.generator == "wrk":
            key = (server.spec.name, tag, payload.path)
            runner = self._runners.get(key)
            if runner is None:
                name = f"{len(self._runners)}"
                runner = self._runners[key] = WrkRunner(payload, self.workdir / "wrk", name)
            return runner.run(server.url, concurrency, seconds)
        return asyncio.run(closed_loop(server.url, payload, concurrency, seconds))

    def _around(self, server: RunningServer, model: str, measure: Callable[[], Window]) -> Window:
        cpu = server.cpu_seconds()
        batches = server.batch_counters(model)
        generator, machine = _generator_cpu_seconds(), machine_cpu_seconds()
        window = measure()
        window.machine_cpu_seconds = machine_cpu_seconds() - machine
        window.generator_cpu_seconds = _generator_cpu_seconds() - generator
        window.cpu_seconds = server.cpu_seconds() - cpu
        after = server.batch_counters(model)
        if batches is not None and after is not None:
            window.batch_rows = after[0] - batches[0]
            window.batches = after[1] - batches[1]
        self.settle(server)
        return window

    def settle_all(self, servers: list[RunningServer]) -> None:
        """Between sections: wait until every server is idle (the long cap, even when quick)."""
        for server in servers:
            self.settle(server, SECTION_SETTLE_CAP)

    def settle(self, server: RunningServer, cap: float | None = None) -> None:
        """Wait for ``server`` to finish what it still has queued before anyone is measured."""
        cap = self.settings.settle_cap if cap is None else cap
        waited, capped = server.settle(cap)
        self.settled.setdefault(server.spec.name, []).append(waited)
        if capped:
            self.capped[server.spec.name] = self.capped.get(server.spec.name, 0) + 1
            _say(f"  {server.spec.name} still busy after {waited:.1f} s: going on")

    def settle_notes(self) -> list[str]:
        """Say how long servers took to go idle after their slices, where it mattered."""
        notes = []
        for name, waits in self.settled.items():
            total, worst = sum(waits), max(waits)
            capped = self.capped.get(name, 0)
            if worst < 1.0 and not capped:
                continue
            note = (
                f"Settling: {name} took up to {worst:.1f} s ({total:.0f} s in all, over"
                f" {len(waits)} slices) to go idle after a slice; the next server waited."
            )
            if capped:
                note += f" {capped} time(s) it was still busy at the cap (seconds above)."
            notes.append(note)
        return notes


def _generator_cpu_seconds() -> float:
    """Return the CPU time of this process and of its children waited for (wrk) so far.

    The built-in generator and the gRPC client run in this process (grpc's
    own threads included), wrk in a child that has exited once its slice is
    read; the servers are children too, but are counted only once stopped,
    after the run.
    """
    return sum(
        usage.ru_utime + usage.ru_stime
        for usage in (
            resource.getrusage(resource.RUSAGE_SELF),
            resource.getrusage(resource.RUSAGE_CHILDREN),
        )
    )


def hand_answers(run: Run, servers: list[RunningServer], artifacts: Artifacts) -> None:
    """Give the ceiling turnout's own answer to each request kind, to replay byte for byte."""
    import urllib.request

    ceiling = next((srv for srv in servers if srv.spec.name == CEILING), None)
    if ceiling is None:
        return
    named = {srv.spec.name: srv for srv in servers}
    source = named.get(ADAPTIVE) or named.get(OFF)
    if source is None:
        run.notes.append(
            "The ceiling answers with its built-in bodies (no turnout server ran to record"
            " turnout's answers from): they are smaller than turnout's."
        )
        return
    sizes = []
    for kind in KINDS.values():
        payload = build_payload(kind, MODEL, artifacts.rows)
        assert payload is not None
        headers, body = payload.requests[0]
        kept: dict[str, str] = {}
        if kind.grpc:  # the serialized ModelInferResponse
            assert source.grpc_target is not None
            answer = asyncio.run(one_call(source.grpc_target, payload.path, body))
        else:
            ask = urllib.request.Request(source.url + payload.path, body, headers, method="POST")
            with urllib.request.urlopen(ask, timeout=10) as reply:
                answer = reply.read()
                kept = {
                    k: reply.headers[k]
                    for k in ("Content-Type", "Inference-Header-Content-Length")
                    if reply.headers.get(k) is not None
                }
        put = urllib.request.Request(
            f"{ceiling.url}/ceiling/answers/{kind.name}", answer, kept, method="PUT"
        )
        with urllib.request.urlopen(put, timeout=10):
            pass
        sizes.append(f"{kind.name} {len(answer)}")
    run.notes.append(
        f"The ceiling replays {source.spec.name}'s recorded answer to each request kind, so it"
        f" sends the same bytes turnout does (body bytes: {', '.join(sizes)})."
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _rotated(items: list[T], shift: int) -> list[T]:
    """Return ``items`` starting at ``shift``: no server always goes first after a change."""
    if not items:
        return items
    k = shift % len(items)
    return items[k:] + items[:k]


def _slices(settings: Settings) -> float:
    return settings.seconds / settings.rounds


def run_closed(
    run: Run,
    servers: list[RunningServer],
    artifacts: Artifacts,
    m: Measurer,
    section: str = "closed",
    kinds: Sequence[str] | None = None,
    concurrencies: Sequence[int] | None = None,
) -> None:
    """Closed loop: every kind, every concurrency (the settings' unless given), round-robin."""
    s = run.settings
    kinds = s.kinds if kinds is None else kinds
    for kind_name in kinds:
        kind = KINDS[kind_name]
        payloads = {
            srv.spec.name: build_payload(kind, MODEL, artifacts.rows, flavour=srv.spec.flavour)
            for srv in servers
        }
        if kind.grpc:
            for srv in servers:
                if srv.grpc_target is None:
                    payloads[srv.spec.name] = None
        able = [srv for srv in servers if payloads[srv.spec.name] is not None]
        for srv in servers:
            if payloads[srv.spec.name] is None:
                run.notes.append(
                    f"{srv.spec.name} does not take {kind_name} requests: not measured."
                )
        # Warmed up on the first kind of each transport: gRPC has connections,
        # handlers and a service of its own to warm.
        if s.warmup > 0 and kind_name == next(k for k in kinds if KINDS[k].grpc == kind.grpc):
            for srv in able:
                payload = payloads[srv.spec.name]
                assert payload is not None
                m.closed(srv, MODEL, payload, kind_name, 16, s.warmup)
        for concurrency in s.concurrency if concurrencies is None else concurrencies:
            _say(f"{section}: {kind_name}, concurrency {concurrency}")
            windows: dict[str, list[Window]] = {srv.spec.name: [] for srv in able}
            for _ in range(s.rounds):
                for srv in run.order(able):
                    payload = payloads[srv.spec.name]
                    assert payload is not None
                    windows[srv.spec.name].append(
                        m.closed(srv, MODEL, payload, kind_name, concurrency, _slices(s))
                    )
            for name, ws in windows.items():
                run.cells.append(Cell(section, kind_name, name, concurrency, merge(ws)))


def run_workers(run: Run, servers: list[RunningServer], artifacts: Artifacts, m: Measurer) -> None:
    """turnout serve --workers N for each N: closed loop, V2 JSON one row, round-robin.

    Notes how each server's CPU time split over its processes in the section,
    so a worker left without connections would show.
    """
    before = {srv.spec.name: srv.cpu_by_process() for srv in servers}
    run_closed(
        run, servers, artifacts, m, "workers", ("v2-json-1",), run.settings.workers_concurrency
    )
    for srv in servers:
        run.notes.append(cpu_split_note(srv, before[srv.spec.name], srv.cpu_by_process()))


def cpu_split_note(server: RunningServer, before: dict[int, float], after: dict[int, float]) -> str:
    """Say which cores ``server`` had and how its CPU time split over its processes."""
    cores = ", ".join(str(core) for core in server.spec.pinned)
    text = f"{server.spec.name}: pinned to CPU {cores}"
    used = {pid: after[pid] - before.get(pid, 0.0) for pid in after}
    total = sum(used.values())
    leader = server.process.pid
    workers = sorted(pid for pid in used if pid != leader)
    if not workers or not total:
        return text + "; one process."
    shares = ", ".join(f"{used[pid] / total:.0%}" for pid in workers)
    text += (
        f"; of its CPU time over the section (warm-up and settling included) the supervisor"
        f" used {used.get(leader, 0.0) / total:.1%} and its {len(workers)}"
        f" worker{'s' if len(workers) > 1 else ''} {shares}"
    )
    if set(before) != set(after):
        text += "; its processes changed during the section (a worker restarted?)"
    return text + "."


def run_open(run: Run, servers: list[RunningServer], artifacts: Artifacts, m: Measurer) -> None:
    """Open loop at each fixed rate, V2 JSON single row."""
    s = run.settings
    kind = KINDS["v2-json-1"]
    for rate in s.rates:
        _say(f"open loop: {rate:g} requests/s")
        windows: dict[str, list[Window]] = {srv.spec.name: [] for srv in servers}
        for _ in range(s.rounds):
            for srv in run.order(servers):
                payload = build_payload(kind, MODEL, artifacts.rows, flavour=srv.spec.flavour)
                assert payload is not None
                windows[srv.spec.name].append(m.open(srv, MODEL, payload, rate, _slices(s)))
        for name, ws in windows.items():
            run.cells.append(Cell("open", kind.name, name, rate, merge(ws)))


def run_routing(run: Run, server: RunningServer, artifacts: Artifacts, m: Measurer) -> None:
    """Each routing setup's model on one server, round-robin, V2 JSON single row."""
    s = run.settings
    kind = KINDS["v2-json-1"]
    payloads = {
        model: build_payload(kind, model, artifacts.rows, keys=True) for model in ROUTING_MODELS
    }
    if s.warmup > 0:
        warm = payloads["active"]
        assert warm is not None
        m.closed(server, "active", warm, "active", 16, s.warmup)
    for concurrency in s.routing_concurrency:
        _say(f"routing: concurrency {concurrency}")
        windows: dict[str, list[Window]] = {model: [] for model in ROUTING_MODELS}
        for _ in range(s.rounds):
            for model, payload in run.order(list(payloads.items())):
                assert payload is not None
                windows[model].append(
                    m.closed(server, model, payload, model, concurrency, _slices(s))
                )
        for model, ws in windows.items():
            run.cells.append(Cell("routing", kind.name, model, concurrency, merge(ws)))


def run_profile(run: Run, servers: list[RunningServer], artifacts: Artifacts, m: Measurer) -> None:
    """Sample turnout adaptive with py-spy under closed-loop load at concurrency 64."""
    from benchmarks.profiling import py_spy_path, record, summarize

    target = next((srv for srv in servers if srv.spec.name == ADAPTIVE), None)
    if target is None or py_spy_path() is None:
        run.notes.append("No profile: it needs turnout adaptive running and py-spy installed.")
        return
    payload = build_payload(KINDS["v2-json-1"], MODEL, artifacts.rows)
    assert payload is not None
    _say("profiling turnout adaptive at concurrency 64 (py-spy)")
    raw = run.settings.workdir / "profile.txt"
    seconds = 8
    record(
        target.process.pid,
        seconds,
        raw,
        lambda: m.closed(target, MODEL, payload, "v2-json-1", 64, seconds + 2),
    )
    run.profile = summarize(raw)


def run_raw_ort(run: Run, artifacts: Artifacts) -> None:
    """Time bare ONNX Runtime at every batch size turnout formed, on the servers' core.

    Run once the servers have stopped, so it neither takes the core from a
    server being measured nor shares it with one still busy. Skipped when no
    ceiling was measured: without it there is no limit to set a cost against.
    """
    batches = [
        batch
        for cell in run.cells
        if cell.section in LIMITED and (batch := cell.window.mean_batch) is not None
    ]
    if not batches or not any(c.section == "closed" and c.server == CEILING for c in run.cells):
        return
    sizes = batch_sizes(batches)
    s = run.settings
    seconds = QUICK_ORT_SECONDS if s.quick else ORT_SECONDS
    _say(f"raw ONNX Runtime: batches of {', '.join(map(str, sizes))} rows, {seconds:g} s each")
    model, rows = artifacts.onnx_path, artifacts.rows
    run.ort = measure_ort(model, rows, sizes, seconds=seconds, rounds=s.rounds, core=SERVER_CPU)


def compared_specs(run: Run, artifacts: Artifacts) -> list[ServerSpec]:
    """Return the servers the closed and open sections compare, as the settings choose them."""
    settings = run.settings
    specs = [
        spec
        for spec in turnout_specs(artifacts, settings.loop)
        if _SERVER_KEYS[spec.name] in settings.servers
    ]
    if settings.asyncio_too and "adaptive" in settings.servers and settings.loop != "asyncio":
        name = f"{ADAPTIVE} (asyncio loop)"
        copy = replace(artifacts, adaptive_repo=own_copy(artifacts.adaptive_repo, name))
        (adaptive,) = [s for s in turnout_specs(copy, "asyncio") if s.name == ADAPTIVE]
        specs.append(replace(adaptive, name=name))
    for ref in settings.baselines:
        specs.append(baseline_spec(artifacts, settings.loop, ref, settings.workdir))
    version = mlserver_version() if "mlserver" in settings.servers else None
    if version is not None:
        specs += mlserver_specs(artifacts.joblib_path, settings.workdir / "peers")
        run.versions["MLServer"] = f"{version} (own virtualenv, its stock sklearn runtime)"
    elif "mlserver" in settings.servers:
        hint = "run `python -m benchmarks peers --setup` to install it in its own virtualenv"
        if not specs:
            raise SystemExit(f"MLServer is the only server asked for, and it is not set up: {hint}")
        run.notes.append(f"MLServer is not set up, so it is not measured: {hint}.")
    return specs


def execute(settings: Settings) -> Run:
    """Build the model, start the servers, measure every section, stop them."""
    from benchmarks.machine import package_version

    run = Run(settings, usable_cores=len(usable_cores()))
    run.notes.append(pin_generator())
    workdir = settings.workdir
    _say(f"fitting the model ({settings.trees} trees, depth {settings.depth}); writing its copies")
    artifacts = build_artifacts(workdir / "models", trees=settings.trees, depth=settings.depth)
    run.versions = {
        name: package_version(name) for name in ("aiohttp", "uvloop", "orjson", "matplotlib")
    }
    run.versions["event loop (all servers)"] = settings.loop
    run.versions["load generator"] = (
        f"{wrk_version()} ({wrk_path()}) closed loop; built-in client open loop"
        if settings.generator == "wrk"
        else "built-in (a lean HTTP/1.1 client)"
    )
    if "closed" in settings.sections and any(KINDS[k].grpc for k in settings.kinds):
        run.versions["gRPC load generator"] = (
            f"grpc.aio client, grpcio {package_version('grpcio')} (benchmarks/grpcload.py),"
            " in the harness process on the generator's core"
        )
    measured = "closed" in settings.sections or "open" in settings.sections
    specs = compared_specs(run, artifacts) if measured else []
    if settings.generator != "wrk":
        run.notes.append(f"Closed loop with the built-in generator: {INSTALL_HINT}.")
    measurer = Measurer(settings, workdir)
    compared = len(specs)
    if "routing" in settings.sections:
        specs.append(routing_spec(artifacts, settings.loop))
    if "workers" in settings.sections:
        specs += workers_specs(artifacts, settings.loop, settings.workers)
    if not specs:
        return run
    _say("starting the servers")
    servers = start_all(specs, workdir / "logs", _say)
    try:
        hand_answers(run, servers[:compared], artifacts)
        if "closed" in settings.sections:
            run_closed(run, servers[:compared], artifacts, measurer)
        if "routing" in settings.sections:
            measurer.settle_all(servers)
            run_routing(run, servers[compared], artifacts, measurer)
        if settings.profile:
            measurer.settle_all(servers)
            run_profile(run, servers[:compared], artifacts, measurer)
        if "workers" in settings.sections:
            measurer.settle_all(servers)
            fleet = servers[compared + ("routing" in settings.sections) :]
            run_workers(run, fleet, artifacts, measurer)
        # Last: above the rate it can serve, MLServer keeps working through its backlog
        # for longer than any settling cap, and would take the core from what came next.
        if "open" in settings.sections:
            measurer.settle_all(servers)
            run_open(run, servers[:compared], artifacts, measurer)
    finally:
        for server in servers:
            server.stop()
    run_raw_ort(run, artifacts)
    run.notes += measurer.settle_notes()
    return run


def _positive(kind: Callable[[str], T], *, zero: bool = False) -> Callable[[str], T]:
    """Return an argparse type: ``kind`` of the text, which must be > 0 (or >= 0)."""

    def parse(text: str) -> T:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0 or (value == 0 and not zero):  # type: ignore[operator]
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else '> 0'}: {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _worker_counts(text: str) -> tuple[int, ...]:
    """Read ``1,2``: counts of workers, each > 0, in the order given, each once."""
    count = _positive(int)
    return tuple(dict.fromkeys(count(part.strip()) for part in text.split(",")))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks http",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run, under 2 minutes")
    add("--seconds", type=_positive(float), default=None, help="measured s per server per cell (4)")
    add("--rounds", type=_positive(int), default=None, help="round-robin slices per cell (2)")
    add("--warmup", type=_positive(float, zero=True), default=None, help="warm-up s per server (1)")
    add(
        "--concurrency",
        type=_positive(int),
        nargs="+",
        default=None,
        help="closed loop (1 16 64 256); also the routing section's (1 64)",
    )
    add(
        "--rates",
        type=_positive(float),
        nargs="+",
        default=None,
        help="open loop req/s (500 1000 2000 3000)",
    )
    add("--kinds", nargs="+", choices=sorted(KINDS), default=None, help="request kinds (all)")
    add(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=None,
        help="closed open routing; workers alone with --workers",
    )
    add(
        "--workers",
        type=_worker_counts,
        default=None,
        metavar="N,N...",
        help="measure turnout serve --workers N for each N, side by side (1,2 with --sections"
        " workers); alone unless --sections is given",
    )
    add("--loop", choices=LOOPS, default=default_loop(), help="servers' event loop")
    add(
        "--generator",
        choices=("wrk", "builtin"),
        default=None,
        help="closed-loop load (wrk if installed)",
    )
    add("--no-peers", action="store_true", help="leave MLServer out even if it is set up")
    add(
        "--servers",
        nargs="+",
        choices=SERVERS,
        default=list(DEFAULT_SERVERS),
        help="servers to run (all but threaded)",
    )
    add(
        "--baseline",
        action="append",
        default=[],
        metavar="GIT_REF",
        help="also run turnout adaptive from the sources of GIT_REF (before/after, side by side)",
    )
    add("--profile", action="store_true", help="also sample turnout adaptive with py-spy")
    add("--asyncio-too", action="store_true", help="also run turnout adaptive on asyncio's loop")
    add("--trees", type=_positive(int), default=100, help="trees in the forest (100)")
    add("--depth", type=_positive(int), default=12, help="depth of each tree (12)")
    add("--no-save", action="store_true", help="print the report only")
    add(
        "--out",
        type=Path,
        default=None,
        help="directory for the report and plots (benchmarks/results)",
    )
    add(
        "--workdir",
        type=Path,
        default=WORKDIR,
        help="scratch files: models, logs (benchmarks/.work)",
    )
    return parser


def parse_args(argv: Sequence[str]) -> Settings:
    """Read the command line into Settings (quick mode changes the defaults, not given values)."""
    parser = _parser()
    args = parser.parse_args(argv)
    quick = args.quick
    if args.sections is None:
        sections = ["workers"] if args.workers else list(DEFAULT_SECTIONS)
    else:
        sections = [*args.sections, *(["workers"] if args.workers else [])]
    sections = list(dict.fromkeys(sections))
    servers = tuple(s for s in args.servers if not (args.no_peers and s == "mlserver"))
    if not servers and {"closed", "open"} & set(sections):
        parser.error(
            f"no server left to measure: --servers {' '.join(args.servers)} with --no-peers"
            " (the closed and open sections need at least one)"
        )
    for ref in args.baseline:
        if not known_ref(ref):
            parser.error(f"--baseline {ref}: not a commit in this git repository")

    def pick(value: object, full: object, fast: object) -> object:
        return value if value is not None else (fast if quick else full)

    generator = args.generator or ("wrk" if wrk_path() else "builtin")
    if generator == "wrk" and not wrk_path():
        raise SystemExit(f"wrk is not installed: {INSTALL_HINT}")
    seconds = float(pick(args.seconds, 4.0, 1.0))  # type: ignore[arg-type]
    rounds = int(pick(args.rounds, 2, 1))  # type: ignore[call-overload]
    if generator == "wrk" and seconds / rounds < 1:
        rounds = max(1, int(seconds))  # wrk measures whole seconds
    return Settings(
        seconds=seconds,
        rounds=rounds,
        warmup=float(pick(args.warmup, 1.0, 1.0)),  # type: ignore[arg-type]
        concurrency=tuple(pick(args.concurrency, [1, 16, 64, 256], [1, 64])),  # type: ignore[arg-type]
        rates=tuple(pick(args.rates, [500, 1000, 2000, 3000], [1000])),  # type: ignore[arg-type]
        kinds=tuple(pick(args.kinds, list(KINDS), list(KINDS))),  # type: ignore[arg-type]
        routing_concurrency=tuple(args.concurrency or ((64,) if quick else (1, 64))),
        sections=tuple(sections),
        loop=args.loop,
        generator=generator,
        servers=servers,
        baselines=tuple(args.baseline),
        asyncio_too=args.asyncio_too,
        trees=args.trees,
        depth=args.depth,
        save=not args.no_save,
        out=args.out,
        workdir=args.workdir,
        quick=quick,
        profile=args.profile,
        settle_cap=QUICK_SETTLE_CAP if quick else SETTLE_CAP,
        workers=(args.workers or WORKERS) if "workers" in sections else (),
        workers_concurrency=tuple(args.concurrency or WORKERS_CONCURRENCY),
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the HTTP benchmark, print the report, save it with its plots."""
    from benchmarks.machine import RESULTS_DIR, load_average, stamp, write_atomic
    from benchmarks.plots import write_plots
    from benchmarks.report import render

    argv = list(sys.argv[1:] if argv is None else argv)
    settings = parse_args(argv)
    load = load_average()
    run = execute(settings)
    when = stamp()
    out = settings.out or RESULTS_DIR
    plots = write_plots(run, out, f"http-{when}") if settings.save else []
    report = render(run, argv, load, [p.name for p in plots])
    print(report)
    if settings.save:
        path = out / f"http-{when}.md"
        write_atomic(path, report)
        _say(f"report written to {path}")
        if run.profile is not None:
            write_atomic(out / f"http-{when}-profile.txt", run.profile)
    return 0
