"""``python -m benchmarks soak``: is turnout's memory flat under steady load?

One real ``turnout serve`` process (``benchmarks.serve_turnout`` on the
routing section's repository, ``benchmarks.artifacts``) serves, among the
routing section's models, ``weighted`` (v1 and v2 at 50/50) and ``shadow``
(v1 answers, every request mirrored to v2). Closed-loop clients (64 by
default; the built-in client of ``benchmarks.rawhttp``) send V2 JSON
single-row requests, each to one of the two models at random, and follow a
share of the answers with the answer's outcome, posted to the admin API
(``POST /admin/models/{model}/outcomes``) as a user's feedback would be.

The server's resident set (``VmRSS`` in ``/proc/<pid>/status``) is sampled
every few seconds. The server traces its allocations
(``serve_turnout --tracemalloc``) and writes a snapshot on SIGUSR1: one at
the end of the first minute, once caches and pools have filled (the
baseline), and one at the end. The target: RSS at the end less than 5%
above RSS at the baseline. The top growth sites between the two snapshots
(``Snapshot.compare_to`` by line) say what grew.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import linecache
import random
import re
import secrets
import sys
import sysconfig
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.artifacts import ROUTING_MODELS, build_artifacts
from benchmarks.eventloop import LOOPS, default_loop
from benchmarks.httpbench import WORKDIR, serve_turnout
from benchmarks.payloads import KINDS, build_payload
from benchmarks.rawhttp import ConnectionPool, prepare
from benchmarks.serve_turnout import SNAPSHOT_SIGNAL, snapshot_path
from benchmarks.servers import (
    REPO_ROOT,
    RunningServer,
    ServerSpec,
    pin_generator,
    usable_cores,
)

__all__ = ["GrowthSite", "RssSample", "SoakResult", "SoakSettings", "main", "render", "run_soak"]

MODELS = ("weighted", "shadow")  # two of the routing section's setups
TARGET = 0.05  # RSS may grow less than this share after the baseline
TOP_SITES = 15
SERIES_EVERY = 30.0  # seconds between the rows of the report's RSS series
SNAPSHOT_TIMEOUT = 300.0  # a snapshot of a large heap is pickled for a while
MB = 1024 * 1024
_REQUEST_ID = re.compile(rb'"request_id":\s*"([^"]+)"')
# Not the server's own allocations: the tracer's and the import machinery's.
_NOT_SERVING = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


@dataclass(frozen=True)
class SoakSettings:
    """What one soak run does."""

    seconds: float = 600.0
    baseline: float = 60.0  # the first snapshot and the RSS growth is counted from, in seconds
    concurrency: int = 64
    outcome_share: float = 0.25  # answers followed by an outcome
    sample_every: float = 2.0
    tracemalloc: bool = True
    frames: int = 1  # frames per traced allocation: 1 groups by line, more tell the callers
    trees: int = 100
    depth: int = 12
    loop: str = field(default_factory=default_loop)
    workdir: Path = WORKDIR / "soak"

    def __post_init__(self) -> None:
        if not 0 < self.baseline < self.seconds:
            raise ValueError(
                f"the baseline ({self.baseline:g} s) must fall within the run ({self.seconds:g} s)"
            )
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if not 0 <= self.outcome_share <= 1:
            raise ValueError(f"outcome share must be from 0 to 1, got {self.outcome_share}")
        if self.sample_every <= 0:
            raise ValueError(f"the sampling interval must be positive, got {self.sample_every}")
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")


@dataclass(frozen=True)
class RssSample:
    """The server's resident set at one moment of the run, and the load so far."""

    at: float  # seconds since the load started
    rss: int  # bytes
    answered: int
    errors: int


@dataclass(frozen=True)
class GrowthSite:
    """One source line's traced memory, end against baseline."""

    where: str  # file:line, the file relative to the repository or site-packages
    code: str
    size_diff: int
    count_diff: int
    size: int
    callers: tuple[str, ...] = ()  # outer frames, innermost first, when more than one is traced


@dataclass
class Counters:
    """What the clients have seen so far."""

    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODELS, 0))
    errors: int = 0
    outcomes_posted: int = 0
    outcome_errors: int = 0
    # model -> version -> outcomes the server answered it recorded for that version
    recorded: dict[str, dict[str, int]] = field(default_factory=lambda: {m: {} for m in MODELS})


@dataclass
class SoakResult:
    """Everything a soak run measured."""

    settings: SoakSettings
    samples: list[RssSample]
    baseline: RssSample
    end: RssSample
    counters: Counters
    sites: list[GrowthSite] = field(default_factory=list)
    traced: tuple[int, int] | None = None  # traced bytes at the baseline and at the end
    snapshot_pauses: list[float] = field(default_factory=list)
    server_facts: dict[str, str] = field(default_factory=dict)

    @property
    def growth(self) -> float:
        """Return RSS growth from the baseline to the end, as a share of the baseline."""
        return (self.end.rss - self.baseline.rss) / self.baseline.rss

    @property
    def met(self) -> bool:
        """Return whether RSS grew less than the target."""
        return self.growth < TARGET

    @property
    def answered(self) -> int:
        """Return the inference requests answered with a 2xx."""
        return sum(self.counters.answered.values())


class Load:
    """Closed-loop clients over the soak's models; a share of answers followed by an outcome."""

    def __init__(
        self, server: RunningServer, token: str, rows: Any, settings: SoakSettings
    ) -> None:
        self.settings = settings
        self.counters = Counters()
        self._pool = ConnectionPool(server.url)
        self._admin_url = f"http://127.0.0.1:{server.ports[1]}"
        self._admin = ConnectionPool(self._admin_url)
        self._auth = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        self._requests: dict[str, list[bytes]] = {}
        for model in MODELS:
            payload = build_payload(KINDS["v2-json-1"], model, rows)
            assert payload is not None
            self._requests[model] = [
                prepare(server.url, payload.path, h, b) for h, b in payload.requests
            ]

    async def run(self, stop: asyncio.Event) -> None:
        """Send requests until ``stop`` is set, then close every connection."""
        try:
            await asyncio.gather(
                *(self._client(random.Random(i), stop) for i in range(self.settings.concurrency))
            )
        finally:
            self._pool.close()
            self._admin.close()

    async def _client(self, rng: random.Random, stop: asyncio.Event) -> None:
        counters = self.counters
        while not stop.is_set():
            model = rng.choice(MODELS)
            answer = await self._pool.exchange(rng.choice(self._requests[model]))
            if answer is None or answer[0] >= 400:
                counters.errors += 1
                continue
            counters.answered[model] += 1
            if rng.random() < self.settings.outcome_share:
                await self._outcome(model, answer[1], float(rng.random() < 0.5))

    async def _outcome(self, model: str, body: bytes, outcome: float) -> None:
        found = _REQUEST_ID.search(body)
        if found is None:
            self.counters.outcome_errors += 1
            return
        feedback = {"outcomes": [{"request_id": found.group(1).decode(), "outcome": outcome}]}
        path = f"/admin/models/{model}/outcomes"
        request = prepare(self._admin_url, path, self._auth, json.dumps(feedback).encode())
        answer = await self._admin.exchange(request)
        self.counters.outcomes_posted += 1
        if answer is None or answer[0] >= 400:
            self.counters.outcome_errors += 1
            return
        recorded = self.counters.recorded[model]
        for version in json.loads(answer[1])["versions"]:  # the version each was recorded for
            recorded[version] = recorded.get(version, 0) + 1


def rss_bytes(pid: int) -> int:
    """Return a process's resident set size (``VmRSS`` of ``/proc/<pid>/status``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024  # the kernel counts it in kB
    raise RuntimeError(f"process {pid} reports no VmRSS (a kernel thread, or gone?)")


async def _snapshot(server: RunningServer, directory: Path, number: int) -> float:
    """Ask the server for its ``number``-th allocation snapshot; return how long it took."""
    path = snapshot_path(directory, number)
    began = time.monotonic()
    server.process.send_signal(SNAPSHOT_SIGNAL)
    while not path.exists():
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited while taking a snapshot:\n{server.log_tail()}")
        if time.monotonic() - began > SNAPSHOT_TIMEOUT:
            raise RuntimeError(f"no snapshot {path} after {SNAPSHOT_TIMEOUT:g} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def _soak(
    server: RunningServer, load: Load, settings: SoakSettings, traces: Path
) -> SoakResult:
    """Run the load, sampling RSS, with snapshots at the baseline and at the end."""
    stop = asyncio.Event()
    clients = asyncio.ensure_future(load.run(stop))
    began = time.monotonic()
    samples: list[RssSample] = []
    pauses: list[float] = []

    def sample() -> RssSample:
        counters = load.counters
        taken = RssSample(
            time.monotonic() - began,
            rss_bytes(server.process.pid),
            sum(counters.answered.values()),
            counters.errors + counters.outcome_errors,
        )
        samples.append(taken)
        return taken

    async def until(at: float) -> None:
        await asyncio.sleep(max(0.0, began + at - time.monotonic()))
        if clients.done():  # a client crashed: say why now, not at the end
            clients.result()

    try:
        steps = int(settings.seconds / settings.sample_every)
        times = sorted({k * settings.sample_every for k in range(steps + 1)} | {settings.baseline})
        baseline: RssSample | None = None
        for at in (t for t in times if t < settings.seconds):
            await until(at)
            if at == settings.baseline:
                # The snapshot's own garbage stays in the RSS after it: count it in the baseline.
                if settings.tracemalloc:
                    pauses.append(await _snapshot(server, traces, 1))
                baseline = sample()
            else:
                sample()
        await until(settings.seconds)
        end = sample()  # before the last snapshot, whose garbage would count as growth
        if settings.tracemalloc:
            pauses.append(await _snapshot(server, traces, 2))
    finally:
        stop.set()
        await clients
    assert baseline is not None
    return SoakResult(settings, samples, baseline, end, load.counters, snapshot_pauses=pauses)


def growth_sites(
    first: Path, last: Path, top: int = TOP_SITES
) -> tuple[list[GrowthSite], int, int]:
    """Return the ``top`` lines whose traced memory grew most from ``first`` to ``last``.

    Also returns the traced bytes in each snapshot, the tracer's and the
    import machinery's own left out.
    """
    base = tracemalloc.Snapshot.load(str(first)).filter_traces(_NOT_SERVING)
    end = tracemalloc.Snapshot.load(str(last)).filter_traces(_NOT_SERVING)
    # A traceback lists its oldest frame first: the allocating line is its last.
    deepest: dict[tracemalloc.Frame, tracemalloc.Traceback] = {}
    for stat in end.compare_to(base, "traceback")[: top * 4]:
        deepest.setdefault(stat.traceback[-1], stat.traceback)  # the largest growth first
    sites = []
    for stat in end.compare_to(base, "lineno")[:top]:
        frame = stat.traceback[-1]
        frames = list(deepest.get(frame, ()))[-2::-1]  # its callers, innermost first
        callers = tuple(_where(f.filename, f.lineno) for f in frames)
        sites.append(
            GrowthSite(
                where=_where(frame.filename, frame.lineno),
                code=linecache.getline(frame.filename, frame.lineno).strip(),
                size_diff=stat.size_diff,
                count_diff=stat.count_diff,
                size=stat.size,
                callers=callers,
            )
        )
    total = sum(stat.size for stat in base.statistics("filename"))
    return sites, total, sum(stat.size for stat in end.statistics("filename"))


def _where(filename: str, lineno: int) -> str:
    """Name a source line by its path under the repository or site-packages."""
    paths = sysconfig.get_paths()
    for root in (str(REPO_ROOT), paths["purelib"], paths["platlib"], paths["stdlib"]):
        if filename.startswith(root.rstrip("/") + "/"):
            filename = filename[len(root.rstrip("/")) + 1 :]
            break
    return f"{filename}:{lineno}"


def _shadow_facts(server: RunningServer, token: str) -> dict[str, str]:
    """What the server's shadow statistics say it compared, dropped and failed."""
    url = f"http://127.0.0.1:{server.ports[1]}/admin/models/shadow/shadow"
    ask = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(ask, timeout=30) as reply:
        shadows = json.loads(reply.read())["shadows"]
    return {
        f"shadow {shadow['shadow']} of {shadow['primary']}": (
            f"{shadow['compared']:,} rows compared, {shadow['dropped']:,} dropped,"
            f" {shadow['errors']:,} errors"
        )
        for shadow in shadows
    }


def run_soak(settings: SoakSettings, say: Callable[[str], None] = print) -> SoakResult:
    """Build the repository, start the server, soak it, and read what grew."""
    say(f"fitting the model ({settings.trees} trees, depth {settings.depth}); writing its copies")
    artifacts = build_artifacts(
        settings.workdir / "models", trees=settings.trees, depth=settings.depth
    )
    say(pin_generator())  # once built: the build may use every core
    traces = settings.workdir / "traces"
    for old in traces.glob("snapshot-*"):
        old.unlink()
    token = secrets.token_hex(16)
    tracing = (
        ("--tracemalloc", str(traces), "--tracemalloc-frames", str(settings.frames))
        if settings.tracemalloc
        else ()
    )
    spec = ServerSpec(
        "turnout soak",
        serve_turnout(artifacts.routing_repo, settings.loop, *tracing),
        ports=2,  # inference, and the admin API that takes outcomes
        env={"TURNOUT_ADMIN_TOKEN": token, "TURNOUT_ADMIN_PORT": "{port1}"},
    )
    server = RunningServer(spec, settings.workdir / "logs" / "soak.log")
    try:
        server.wait_ready()
        say(f"serving at {server.url}; {settings.concurrency} clients for {settings.seconds:g} s")
        load = Load(server, token, artifacts.rows, settings)
        result = asyncio.run(_soak(server, load, settings, traces))
        result.server_facts = _shadow_facts(server, token)
    finally:
        server.stop()
    if settings.tracemalloc:
        say("comparing the snapshots")
        first, last = snapshot_path(traces, 1), snapshot_path(traces, 2)
        result.sites, base, end = growth_sites(first, last)
        result.traced = (base, end)
    return result


def _mb(size: int) -> str:
    return f"{size / MB:,.1f} MB"


def _per_version(counts: dict[str, int]) -> str:
    return ", ".join(f"{version} {n:,}" for version, n in sorted(counts.items())) or "none"


def _signed_kb(size: int) -> str:
    return f"{size / 1024:+,.0f} KiB"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def result_table(result: SoakResult) -> list[str]:
    """The run's figures as a Markdown table."""
    s, c = result.settings, result.counters
    elapsed = result.end.at
    met = "met" if result.met else "**MISSED**"
    rows = [
        (f"RSS at {s.baseline:g} s (baseline)", _mb(result.baseline.rss)),
        (f"RSS at the end ({elapsed:.0f} s)", _mb(result.end.rss)),
        (
            "growth after the baseline",
            f"{result.growth:+.2%} ({_signed_kb(result.end.rss - result.baseline.rss)})",
        ),
        (f"target: growth < {TARGET:.0%}", met),
        ("requests answered", f"{result.answered:,} ({result.answered / elapsed:,.0f}/s)"),
        *((f"of which {model}", f"{n:,}") for model, n in c.answered.items()),
        ("inference errors", f"{c.errors:,}"),
        ("outcomes posted (errors)", f"{c.outcomes_posted:,} ({c.outcome_errors:,})"),
        *(
            (f"outcomes recorded, {model}", _per_version(versions))
            for model, versions in c.recorded.items()
        ),
        *result.server_facts.items(),
    ]
    if result.traced is not None:
        base, end = result.traced
        rows.append(
            (
                "traced Python memory, baseline / end",
                f"{_mb(base)} / {_mb(end)} ({_signed_kb(end - base)})",
            )
        )
    if result.snapshot_pauses:
        pauses = " / ".join(f"{p:.1f} s" for p in result.snapshot_pauses)
        rows.append(("snapshot pauses (server stalled), baseline / end", pauses))
    return ["| figure | value |", "|---|---|", *(f"| {_cell(k)} | {_cell(v)} |" for k, v in rows)]


def series_table(result: SoakResult, every: float = SERIES_EVERY) -> list[str]:
    """RSS about every ``every`` seconds, beside the baseline, with the load so far."""
    lines = ["| t (s) | RSS | vs baseline | answered | errors |", "|--:|--:|--:|--:|--:|"]
    picked: list[RssSample] = []
    for sample in result.samples:
        if not picked or sample.at >= picked[-1].at + every - result.settings.sample_every / 2:
            picked.append(sample)
    for extra in (result.baseline, result.end):
        if extra not in picked:
            picked.append(extra)
    for sample in sorted(picked, key=lambda x: x.at):
        versus = (sample.rss - result.baseline.rss) / result.baseline.rss
        mark = " (baseline)" if sample is result.baseline else ""
        lines.append(
            f"| {sample.at:.0f}{mark} | {_mb(sample.rss)} | {versus:+.2%} | {sample.answered:,}"
            f" | {sample.errors:,} |"
        )
    return lines


def sites_table(result: SoakResult) -> list[str]:
    """The top growth sites as a Markdown table."""
    lines = [
        "| # | growth | blocks | size at end | where | code |",
        "|--:|--:|--:|--:|---|---|",
    ]
    for i, site in enumerate(result.sites, 1):
        lines.append(
            f"| {i} | {_signed_kb(site.size_diff)} | {site.count_diff:+,} | {_mb(site.size)}"
            f" | `{_cell(site.where)}` | `{_cell(site.code[:70])}` |"
        )
    return lines


def render(result: SoakResult, argv: Sequence[str], facts: Sequence[tuple[str, str]]) -> str:
    """Return the Markdown report of a soak run."""
    s = result.settings
    lines = [
        "# Soak: turnout's memory under steady load",
        "",
        f"`{' '.join(['python -m benchmarks soak', *argv])}`",
        "",
        f"One `turnout serve` process ({s.loop} loop) serving the routing section's models,"
        f" {s.trees} trees of depth {s.depth} each version; {s.concurrency} closed-loop clients"
        f" send V2 JSON single-row requests to `weighted` ({_routing('weighted')}) or `shadow`"
        f" ({_routing('shadow')}) at random, for {s.seconds:g} s; {s.outcome_share:.0%} of the"
        " answers are followed by an outcome posted to the admin API. The server's RSS is"
        f" sampled every {s.sample_every:g} s; growth is counted from {s.baseline:g} s on.",
        "",
        "## Result",
        "",
        *result_table(result),
        "",
        f"## RSS every {SERIES_EVERY:g} s",
        "",
        *series_table(result),
        "",
    ]
    if not s.tracemalloc:
        lines += ["Run with `--no-tracemalloc`: no allocation snapshots, no growth sites.", ""]
    else:
        lines += [
            f"## Top {len(result.sites)} growth sites (tracemalloc, by line, end against"
            f" {s.baseline:g} s)",
            "",
            "RSS here includes tracemalloc's own bookkeeping, some tens of bytes per live"
            " block; `--no-tracemalloc` measures RSS without it.",
            "",
            *sites_table(result),
            "",
        ]
        called = [site for site in result.sites[:5] if site.callers]
        if called:
            lines += ["Called from (innermost first):", ""]
            for site in called:
                lines.append(f"- `{site.where}`: " + " ← ".join(f"`{c}`" for c in site.callers))
            lines.append("")
    lines += ["## Machine", "", *(f"- {name}: {value}" for name, value in facts), ""]
    return "\n".join(lines)


def _routing(model: str) -> str:
    config = ROUTING_MODELS[model]
    return f"{config.strategy} {json.dumps(config.params, default=dict)}"


def _parser() -> argparse.ArgumentParser:
    defaults = SoakSettings()
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks soak",
        description="turnout serve under steady mixed-routing load with outcome feedback:"
        " RSS growth after the first minute, and what grew (tracemalloc).",
    )
    add = parser.add_argument
    add("--seconds", type=float, default=defaults.seconds, help="length of the load (600)")
    add("--baseline", type=float, default=defaults.baseline,
        help="when the first snapshot is taken and growth is counted from (60)")  # fmt: skip
    add("--concurrency", type=int, default=defaults.concurrency, help="closed-loop clients (64)")
    add("--outcome-share", type=float, default=defaults.outcome_share,
        help="share of answers followed by an outcome (0.25)")  # fmt: skip
    add("--sample-every", type=float, default=defaults.sample_every,
        help="seconds between RSS samples (2)")  # fmt: skip
    add("--tracemalloc-frames", type=int, default=defaults.frames,
        help="frames per traced allocation; more than 1 also names the callers (1)")  # fmt: skip
    add("--no-tracemalloc", action="store_true",
        help="measure RSS without tracing allocations (no growth sites)")  # fmt: skip
    add("--trees", type=int, default=defaults.trees, help="trees in the forest (100)")
    add("--depth", type=int, default=defaults.depth, help="depth of each tree (12)")
    add("--loop", choices=LOOPS, default=defaults.loop, help="the server's event loop")
    add("--workdir", type=Path, default=defaults.workdir,
        help="scratch files: models, snapshots, logs (benchmarks/.work/soak)")  # fmt: skip
    add("--out", type=Path, default=None, help="directory for the report (benchmarks/results)")
    add("--no-save", action="store_true", help="print the report only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak, print its tables, write the report; exit status 1 if RSS grew too much."""
    from benchmarks.machine import (
        PACKAGES,
        RESULTS_DIR,
        load_average,
        machine_info,
        stamp,
        write_atomic,
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = SoakSettings(
            seconds=args.seconds,
            baseline=args.baseline,
            concurrency=args.concurrency,
            outcome_share=args.outcome_share,
            sample_every=args.sample_every,
            tracemalloc=not args.no_tracemalloc,
            frames=args.tracemalloc_frames,
            trees=args.trees,
            depth=args.depth,
            loop=args.loop,
            workdir=args.workdir,
        )
    except ValueError as exc:
        parser.error(str(exc))
    load_at_start = load_average()

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    result = run_soak(settings, say)
    packages = (*PACKAGES, "aiohttp", "uvloop")
    facts = machine_info(load_at_start, packages, usable=len(usable_cores()))
    report = render(result, argv, facts)
    tables = [*result_table(result), *(["", *sites_table(result)] if result.sites else [])]
    print("\n".join(tables))
    if not args.no_save:
        path = (args.out or RESULTS_DIR) / f"soak-{stamp()}.md"
        write_atomic(path, report)
        say(f"report: {path}")
    return 0 if result.met else 1
