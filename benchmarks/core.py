"""In-process benchmark of turnout's serving core against bare ONNX Runtime.

N asyncio tasks in one event loop send single-row requests, closed loop (each
sends its next request when the last one returns), to:

* turnout with adaptive batching (``BatchingConfig(max_batch_rows=...)``),
  with a 1-row float32 array and with a list of one dict keyed by feature name;
* turnout with batching off (``BatchingConfig(max_batch_rows=1)``);
* a bare ``onnxruntime.InferenceSession.run`` called sequentially at batch 1,
  and at the mean batch size turnout formed at that concurrency;
* a no-op ``loop.run_in_executor`` round trip: the cost of the thread handoff
  alone, which turnout pays once per batch.

The modes compared at one concurrency are measured side by side: each cell's
time is cut into ``--rounds`` slices, run round-robin across the modes, so
that drift on a shared machine hits every mode alike. Run
``python -m benchmarks.core --help``; the markdown report goes to stdout and
to ``benchmarks/results/core-<timestamp>.md``.

With ``--baseline REF`` (repeatable) the run compares turnout's code instead:
this tree's against the sources of each git REF, in one invocation. Two trees
cannot share a process, so each round runs every tree once, in a child
process of its own (``benchmarks.corebaseline``), the trees' order turning
from round to round so that drift hits each alike.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.machine import RESULTS_DIR, load_average, machine_info, stamp, write_atomic
from turnout import BatchingConfig, ModelServer

VERSION = "v1"
N_SAMPLES = 5000
N_FEATURES = 20
FEATURES = tuple(f"f{i}" for i in range(N_FEATURES))
POOL_ROWS = 1024  # distinct request rows the clients cycle through
TARGET_CONCURRENCY = 64
TARGET_SPEEDUP = 3.0
TARGET_RAW_SHARE = 0.30
TARGET_ADDED_P50_US = 150.0

ADAPTIVE = "turnout adaptive"
ADAPTIVE_DICT = "turnout adaptive, dict row"
OFF = "turnout batching off"
RAW_1 = "raw ORT, batch 1"
RAW_B = "raw ORT, batch B"
HANDOFF = "no-op run_in_executor"

MODELS = {
    "rf": "RandomForestClassifier(n_estimators=100, max_depth=12)",
    "lr": "LogisticRegression()",
}
MODES = ("adaptive", "dict", "off", "raw")

Key = tuple[str, int, int]  # (model, runtime_threads, max_batch_rows)
Predict = Callable[[str, Any], Awaitable[Any]]


@dataclass(frozen=True)
class Settings:
    """What one invocation measures, from the command line."""

    duration: float
    warmup: float
    rounds: int
    concurrency: tuple[int, ...]
    models: tuple[str, ...]
    modes: frozenset[str]
    runtime_threads: tuple[int, ...]
    max_batch_rows: tuple[int, ...]
    save: bool
    profile: bool
    out: Path = RESULTS_DIR
    baselines: tuple[str, ...] = ()  # git refs whose turnout runs beside this tree's
    cells_json: Path | None = None  # internal: where a --baseline child writes its cells


@dataclass(frozen=True)
class Workload:
    """One fitted model and the requests the clients send to it."""

    name: str
    estimator: Any
    rows: list[np.ndarray[Any, Any]]
    records: list[list[dict[str, float]]]
    table: np.ndarray[Any, Any]


@dataclass(frozen=True)
class Sample:
    """One measured slice: per-call latencies, rows answered, and the batches that ran them."""

    latencies: list[float]
    rows: int
    batch_rows: int
    batches: int


@dataclass
class Tally:
    """The slices of one cell, added up."""

    latencies: list[float] = field(default_factory=list)
    rows: int = 0
    batch_rows: int = 0
    batches: int = 0
    seconds: float = 0.0

    def add(self, sample: Sample, seconds: float) -> None:
        """Add one slice of ``seconds``."""
        self.latencies += sample.latencies
        self.rows += sample.rows
        self.batch_rows += sample.batch_rows
        self.batches += sample.batches
        self.seconds += seconds

    @property
    def mean_batch(self) -> float:
        """Mean rows per executed batch (0 before any batch)."""
        return self.batch_rows / self.batches if self.batches else 0.0


@dataclass(frozen=True)
class Cell:
    """One measured cell: a model, a server setting, a concurrency and a mode."""

    model: str
    threads: int
    max_batch_rows: int
    concurrency: int | None
    mode: str
    calls: int
    rows: int
    seconds: float
    mean_batch: float
    p50: float
    p99: float

    @property
    def calls_per_s(self) -> float:
        """Requests (or session.run calls) completed per second."""
        return self.calls / self.seconds

    @property
    def rows_per_s(self) -> float:
        """Rows answered per second."""
        return self.rows / self.seconds


Measure = Callable[[float], Awaitable[Sample]]


# -- workloads -------------------------------------------------------------------


def make_workloads(names: Sequence[str]) -> list[Workload]:
    """Fit the requested models on make_classification data and build their requests."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=N_SAMPLES, n_features=N_FEATURES, random_state=0)
    table = np.ascontiguousarray(X, dtype=np.float32)
    rows = [table[i : i + 1].copy() for i in range(POOL_ROWS)]
    records = [[dict(zip(FEATURES, map(float, X[i]), strict=True))] for i in range(POOL_ROWS)]
    return [Workload(name, _fit(name, X, y), rows, records, table) for name in names]


def _fit(name: str, X: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> Any:
    """Return the fitted estimator called ``name``."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    if name == "rf":
        return RandomForestClassifier(n_estimators=100, max_depth=12, random_state=0).fit(X, y)
    return LogisticRegression(max_iter=1000).fit(X, y)


# -- load generation ---------------------------------------------------------------


async def closed_loop(
    predict: Predict, model: str, inputs: Sequence[Any], concurrency: int, duration: float
) -> list[float]:
    """Run ``concurrency`` closed-loop clients for ``duration`` s; return in-window latencies."""
    end = time.perf_counter() + duration
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    clients = (
        _client(predict, model, inputs, k * 37, end, latencies[k]) for k in range(concurrency)
    )
    await asyncio.gather(*clients)
    return [value for per_client in latencies for value in per_client]


async def _client(
    predict: Predict, model: str, inputs: Sequence[Any], start: int, end: float, out: list[float]
) -> None:
    """Send requests one after another until ``end``; record those that finish by then."""
    clock, n, i = time.perf_counter, len(inputs), start
    while (sent := clock()) < end:
        await predict(model, inputs[i % n])
        done = clock()
        if done <= end:
            out.append(done - sent)
        i += 1


def raw_loop(session: Any, feeds: Sequence[dict[str, Any]], duration: float) -> list[float]:
    """Call ``session.run`` back to back for ``duration`` s; return per-call latencies."""
    run, clock, n, i = session.run, time.perf_counter, len(feeds), 0
    end = clock() + duration
    latencies: list[float] = []
    while (sent := clock()) < end:
        run(None, feeds[i % n])
        latencies.append(clock() - sent)
        i += 1
    return latencies


async def handoff_loop(executor: ThreadPoolExecutor, duration: float) -> list[float]:
    """Await no-op ``run_in_executor`` calls back to back; return per-call latencies."""
    loop, clock = asyncio.get_running_loop(), time.perf_counter
    end = clock() + duration
    latencies: list[float] = []
    while (sent := clock()) < end:
        await loop.run_in_executor(executor, int)
        latencies.append(clock() - sent)
    return latencies


# -- measurers: one per mode, each measures one slice ------------------------------------


def _batch_counters(server: ModelServer, model: str) -> tuple[int, int]:
    """Return the (rows, batches) a deployment has executed so far."""
    snapshot = server.get_all_models_status()[model][VERSION]["metrics"]
    return snapshot.rows, snapshot.batches


def turnout_measure(
    server: ModelServer, model: str, inputs: Sequence[Any], concurrency: int
) -> Measure:
    """Return a measurer of closed-loop requests to ``model`` on ``server``."""

    async def measure(seconds: float) -> Sample:
        rows0, batches0 = _batch_counters(server, model)
        latencies = await closed_loop(server.predict, model, inputs, concurrency, seconds)
        rows1, batches1 = _batch_counters(server, model)
        return Sample(latencies, len(latencies), rows1 - rows0, batches1 - batches0)

    return measure


def batch_feeds(session: Any, table: np.ndarray[Any, Any], rows: int) -> list[dict[str, Any]]:
    """Return up to 64 feeds of ``session``, each ``rows`` consecutive rows of ``table``."""
    name = session.get_inputs()[0].name
    starts = range(0, len(table) - rows + 1, rows)
    return [{name: table[s : s + rows]} for s in itertools.islice(starts, 64)]


def raw_measure(session: Any, table: np.ndarray[Any, Any], batch: Callable[[], int]) -> Measure:
    """Return a measurer of sequential ``session.run`` calls of ``batch()`` rows."""
    cache: dict[int, list[dict[str, Any]]] = {}

    async def measure(seconds: float) -> Sample:
        rows = batch()
        if rows not in cache:
            cache[rows] = batch_feeds(session, table, rows)
        latencies = raw_loop(session, cache[rows], seconds)
        calls = len(latencies)
        return Sample(latencies, calls * rows, calls * rows, calls)

    return measure


def handoff_measure(executor: ThreadPoolExecutor) -> Measure:
    """Return a measurer of no-op executor round trips."""

    async def measure(seconds: float) -> Sample:
        latencies = await handoff_loop(executor, seconds)
        return Sample(latencies, len(latencies), 0, 0)

    return measure


async def measure_side_by_side(
    measures: dict[str, Measure], settings: Settings
) -> dict[str, Tally]:
    """Warm every mode up, then run them round-robin in slices; return each mode's tally."""
    tallies = {mode: Tally() for mode in measures}
    for measure in measures.values():
        await measure(settings.warmup)
    piece = settings.duration / settings.rounds
    for _ in range(settings.rounds):
        for mode, measure in measures.items():
            tallies[mode].add(await measure(piece), piece)
    return tallies


# -- one model at one concurrency --------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What a group of cells runs against: servers, the bare session, the workload."""

    servers: dict[str, ModelServer]
    session: Any
    executor: ThreadPoolExecutor
    work: Workload
    key: Key


def group_measures(target: Target, concurrency: int, settings: Settings) -> dict[str, Measure]:
    """Return the measurers of every requested mode at one concurrency, in run order."""
    work, modes, servers = target.work, settings.modes, target.servers
    measures: dict[str, Measure] = {}
    if concurrency == min(settings.concurrency) and "raw" in modes:
        measures[RAW_1] = raw_measure(target.session, work.table, lambda: 1)
        measures[HANDOFF] = handoff_measure(target.executor)
    if "adaptive" in modes:
        adaptive = turnout_measure(servers["adaptive"], work.name, work.rows, concurrency)
        if "raw" in modes:
            formed: list[float] = [1.0]
            measures[ADAPTIVE] = _recording_batch(adaptive, formed)
            measures[RAW_B] = raw_measure(target.session, work.table, lambda: round(formed[0]))
        else:
            measures[ADAPTIVE] = adaptive
    if "off" in modes:
        measures[OFF] = turnout_measure(servers["off"], work.name, work.rows, concurrency)
    if "dict" in modes:
        adaptive_server = servers["adaptive"]
        measures[ADAPTIVE_DICT] = turnout_measure(
            adaptive_server, work.name, work.records, concurrency
        )
    return measures


def _recording_batch(measure: Measure, formed: list[float]) -> Measure:
    """Wrap ``measure`` so each slice leaves its mean batch size in ``formed[0]``."""

    async def recording(seconds: float) -> Sample:
        sample = await measure(seconds)
        if sample.batches:
            formed[0] = max(1.0, sample.batch_rows / sample.batches)
        return sample

    return recording


async def group_cells(target: Target, concurrency: int, settings: Settings) -> list[Cell]:
    """Measure every requested mode at one concurrency, side by side."""
    measures = group_measures(target, concurrency, settings)
    tallies = await measure_side_by_side(measures, settings)
    if settings.profile and ADAPTIVE in measures:
        await profile_adaptive(target, concurrency, settings.duration, settings.out)
    return [_cell(target.key, concurrency, mode, tally) for mode, tally in tallies.items()]


def _cell(key: Key, concurrency: int, mode: str, tally: Tally) -> Cell:
    """Summarise one mode's tally as a Cell."""
    model, threads, max_rows = key
    latencies = tally.latencies
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (0.0, 0.0)
    return Cell(
        model=model,
        threads=threads,
        max_batch_rows=max_rows,
        concurrency=None if mode in (RAW_1, HANDOFF) else concurrency,
        mode=mode,
        calls=len(latencies),
        rows=tally.rows,
        seconds=tally.seconds,
        mean_batch=tally.mean_batch,
        p50=float(p50),
        p99=float(p99),
    )


async def profile_adaptive(target: Target, concurrency: int, duration: float, out: Path) -> None:
    """Run one more adaptive window under pyinstrument and save its text report."""
    from pyinstrument import Profiler

    server, work = target.servers["adaptive"], target.work
    profiler = Profiler(interval=0.0001, async_mode="disabled")
    profiler.start()
    await closed_loop(server.predict, work.name, work.rows, concurrency, duration)
    profiler.stop()
    model, threads, max_rows = target.key
    path = out / f"profile-{model}-c{concurrency}-t{threads}-b{max_rows}-{stamp()}.txt"
    write_atomic(path, profiler.output_text(unicode=False, color=False, show_all=False))
    print(f"profile written to {path}", file=sys.stderr)


# -- one server setting ---------------------------------------------------------------


def open_session(onnx_bytes: bytes, threads: int) -> Any:
    """Open an InferenceSession with the options turnout's OnnxRuntime uses."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


async def deploy(server: ModelServer, work: Workload) -> bytes:
    """Deploy ``work``'s estimator as its active version; return the served ONNX bytes."""
    deployment = await server.deploy_model(work.name, VERSION, work.estimator, features=FEATURES)
    onnx_bytes = deployment.loaded.onnx_bytes
    assert onnx_bytes is not None
    return onnx_bytes


async def check_agreement(server: ModelServer, session: Any, work: Workload) -> None:
    """Fail fast if turnout and the bare session disagree on a few rows."""
    name = session.get_inputs()[0].name
    for row, record in zip(work.rows[:4], work.records[:4], strict=True):
        expected = session.run(None, {name: row})[-1][:, 1]
        for request in (row, record):
            served = await server.predict(work.name, request)
            np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)


async def run_setting(
    workloads: list[Workload], settings: Settings, threads: int, max_rows: int
) -> list[Cell]:
    """Measure every model under one (runtime_threads, max_batch_rows) setting."""
    adaptive_config = BatchingConfig(max_batch_rows=max_rows)
    off_config = BatchingConfig(max_batch_rows=1)
    cells: list[Cell] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-noop") as executor:
        async with (
            ModelServer(batching=adaptive_config, runtime_threads=threads) as adaptive,
            ModelServer(batching=off_config, runtime_threads=threads) as off,
        ):
            for work in workloads:
                onnx_bytes = await deploy(adaptive, work)
                if "off" in settings.modes:
                    await deploy(off, work)
                session = open_session(onnx_bytes, threads)
                await check_agreement(adaptive, session, work)
                servers = {"adaptive": adaptive, "off": off}
                target = Target(servers, session, executor, work, (work.name, threads, max_rows))
                for concurrency in settings.concurrency:
                    cells += await group_cells(target, concurrency, settings)
                    _progress(target.key, concurrency)
    return cells


def _progress(key: Key, concurrency: int) -> None:
    """Tell stderr how far the run has got."""
    model, threads, max_rows = key
    print(
        f"done: {model} threads={threads} max_batch_rows={max_rows} concurrency={concurrency}",
        file=sys.stderr,
    )


# -- report ------------------------------------------------------------------------------


def _us(seconds: float) -> str:
    """Format seconds as microseconds."""
    micros = seconds * 1e6
    return f"{micros:,.1f}" if abs(micros) < 100 else f"{micros:,.0f}"


def results_table(cells: list[Cell]) -> list[str]:
    """Return the per-cell markdown table."""
    lines = [
        "| model | threads | max rows | conc | mode | calls/s | rows/s | p50 µs | p99 µs"
        " | mean batch |",
        "|---|--:|--:|--:|---|--:|--:|--:|--:|--:|",
    ]
    for c in cells:
        conc = "seq" if c.concurrency is None else str(c.concurrency)
        batch = "-" if c.mode == HANDOFF else f"{c.mean_batch:.1f}"
        lines.append(
            f"| {c.model} | {c.threads} | {c.max_batch_rows} | {conc} | {c.mode}"
            f" | {c.calls_per_s:,.0f} | {c.rows_per_s:,.0f} | {_us(c.p50)} | {_us(c.p99)}"
            f" | {batch} |"
        )
    return lines


@dataclass(frozen=True)
class Ratios:
    """The side-by-side ratios for one model, setting and concurrency."""

    key: Key
    concurrency: int
    speedup: float | None
    raw_share: float | None
    raw_batch: float | None
    added_p50: float | None
    dict_share: float | None


def ratios(cells: list[Cell]) -> list[Ratios]:
    """Compute adaptive/off, adaptive vs raw at batch B, and added p50 at concurrency 1."""
    index = {(c.model, c.threads, c.max_batch_rows, c.concurrency, c.mode): c for c in cells}
    out: list[Ratios] = []
    for cell in cells:
        if cell.mode != ADAPTIVE or cell.concurrency is None:
            continue
        key = (cell.model, cell.threads, cell.max_batch_rows)
        off = index.get((*key, cell.concurrency, OFF))
        raw = index.get((*key, cell.concurrency, RAW_B))
        raw1 = index.get((*key, None, RAW_1))
        dicts = index.get((*key, cell.concurrency, ADAPTIVE_DICT))
        out.append(
            Ratios(
                key=key,
                concurrency=cell.concurrency,
                speedup=cell.rows_per_s / off.rows_per_s if off else None,
                raw_share=cell.rows_per_s / raw.rows_per_s if raw else None,
                raw_batch=raw.mean_batch if raw else None,
                added_p50=cell.p50 - raw1.p50 if raw1 and cell.concurrency == 1 else None,
                dict_share=dicts.rows_per_s / cell.rows_per_s if dicts else None,
            )
        )
    return out


def _opt(value: float | None, fmt: str, suffix: str = "") -> str:
    """Format an optional number, or a dash."""
    return "-" if value is None else format(value, fmt) + suffix


def ratios_table(rows: list[Ratios]) -> list[str]:
    """Return the markdown table of side-by-side ratios."""
    lines = [
        "| model | threads | max rows | conc | adaptive / off | adaptive % of raw ORT @ B | B"
        " | added p50 µs vs raw batch 1 | dict rows / array rows |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        model, threads, max_rows = r.key
        added = "-" if r.added_p50 is None else _us(r.added_p50)
        lines.append(
            f"| {model} | {threads} | {max_rows} | {r.concurrency} | {_opt(r.speedup, '.2f', 'x')}"
            f" | {_opt(r.raw_share, '.0%')} | {_opt(r.raw_batch, '.0f')} | {added}"
            f" | {_opt(r.dict_share, '.0%')} |"
        )
    return lines


def targets(rows: list[Ratios]) -> list[str]:
    """Return the target checks for the RF model, one line per setting."""
    lines: list[str] = []
    for r in rows:
        model, threads, max_rows = r.key
        if model != "rf":
            continue
        where = f"rf, threads={threads}, max_batch_rows={max_rows}, concurrency {r.concurrency}"
        if r.concurrency == TARGET_CONCURRENCY and r.speedup is not None:
            lines.append(_check(where, "adaptive / batching off", r.speedup, TARGET_SPEEDUP, "x"))
        if r.concurrency == TARGET_CONCURRENCY and r.raw_share is not None:
            lines.append(
                _check(where, "% of raw ORT rows/s at B", r.raw_share, TARGET_RAW_SHARE, "%")
            )
        if r.added_p50 is not None:
            added = r.added_p50 * 1e6
            ok = "met" if added <= TARGET_ADDED_P50_US else "MISSED"
            lines.append(
                f"- {where}: added p50 over raw batch 1 = {added:.0f} µs"
                f" (target <= {TARGET_ADDED_P50_US:.0f} µs): **{ok}**"
            )
    return lines


def _check(where: str, what: str, value: float, target: float, unit: str) -> str:
    """Format one '>= target' check."""
    ok = "met" if value >= target else "MISSED"
    shown = f"{value:.0%}" if unit == "%" else f"{value:.2f}x"
    goal = f"{target:.0%}" if unit == "%" else f"{target:.0f}x"
    return f"- {where}: {what} = {shown} (target >= {goal}): **{ok}**"


def render(settings: Settings, argv: Sequence[str], cells: list[Cell], load: str) -> str:
    """Return the whole markdown report; ``load`` is the load average when the run began."""
    command = shlex.join(["python", "-m", "benchmarks.core", *argv])
    rows = ratios(cells)
    models = "; ".join(f"{name} = {MODELS[name]}" for name in settings.models)
    lines = [
        f"# turnout core benchmark, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
        f"Command: `{command}`",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in machine_info(load)),
        "",
        f"Closed loop, single-row requests; per cell {settings.duration:g} s in"
        f" {settings.rounds} round-robin slices after {settings.warmup:g} s warm-up."
        f" Models: {models}; data make_classification(n_samples={N_SAMPLES},"
        f" n_features={N_FEATURES}, random_state=0). Latency is client-side (await predict)"
        " for turnout, per session.run call for raw ORT. B = turnout adaptive's mean batch"
        " size at that concurrency.",
        "",
        "## Results",
        "",
        *results_table(cells),
        "",
        "## Ratios (measured side by side in this run)",
        "",
        *ratios_table(rows),
        "",
    ]
    checks = targets(rows)
    if checks:
        lines += ["## Targets", "", *checks, ""]
    return "\n".join(lines)


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.core",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--duration", type=float, default=2.0, help="measured seconds per cell (default 2)")
    add("--warmup", type=float, default=0.5, help="warm-up seconds per cell (default 0.5)")
    add("--rounds", type=int, default=4, help="round-robin slices per cell (default 4)")
    add("--quick", action="store_true", help="smoke run: 0.3 s cells, 0.1 s warm-up, 2 rounds")
    add("--concurrency", type=int, nargs="+", default=[1, 8, 64, 256], help="client tasks")
    add("--models", nargs="+", choices=sorted(MODELS), default=["rf", "lr"])
    add("--modes", nargs="+", choices=MODES, default=list(MODES), help="what to measure")
    add("--runtime-threads", type=int, nargs="+", default=[1], help="ORT intra-op threads")
    add(
        "--max-batch-rows",
        type=int,
        nargs="+",
        default=[BatchingConfig().max_batch_rows],
        help="adaptive batch bound(s)",
    )
    add("--no-save", action="store_true", help="print the report only; write no file")
    add("--profile", action="store_true", help="also profile each adaptive cell (pyinstrument)")
    add(
        "--baseline",
        action="append",
        default=[],
        metavar="GIT_REF",
        help="compare this tree's turnout with the sources of GIT_REF, side by side, in child"
        " processes (turnout modes only: adaptive, dict, off); repeatable",
    )
    add("--cells-json", type=Path, help=argparse.SUPPRESS)  # benchmarks.corebaseline's children
    add(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help="directory for the report and profiles (benchmarks/results)",
    )
    return parser


def parse_args(argv: Sequence[str]) -> Settings:
    """Read the command line into Settings."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.rounds < 1 or min(args.concurrency) < 1:
        parser.error("need --duration > 0, --warmup >= 0, --rounds >= 1, --concurrency >= 1")
    if args.baseline:
        from benchmarks.gitrefs import known_ref

        for ref in args.baseline:
            if not known_ref(ref):
                parser.error(f"--baseline {ref}: not a commit in this git repository")
        if args.profile:
            parser.error("--profile does not apply with --baseline")
        if not set(args.modes) - {"raw"}:
            parser.error("--baseline compares turnout modes: give --modes adaptive, dict or off")
    quick = args.quick
    return Settings(
        duration=0.3 if quick else args.duration,
        warmup=0.1 if quick else args.warmup,
        rounds=2 if quick else args.rounds,
        concurrency=tuple(args.concurrency),
        models=tuple(args.models),
        modes=frozenset(args.modes),
        runtime_threads=tuple(args.runtime_threads),
        max_batch_rows=tuple(args.max_batch_rows),
        save=not args.no_save,
        profile=args.profile,
        out=args.out,
        baselines=tuple(dict.fromkeys(args.baseline)),
        cells_json=args.cells_json,
    )


async def run(settings: Settings, workloads: list[Workload]) -> list[Cell]:
    """Measure every (runtime_threads, max_batch_rows) setting in turn."""
    cells: list[Cell] = []
    for threads, max_rows in itertools.product(settings.runtime_threads, settings.max_batch_rows):
        cells += await run_setting(workloads, settings, threads, max_rows)
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report and save it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = parse_args(argv)
    load = load_average()
    if settings.baselines:
        from benchmarks import corebaseline

        report = corebaseline.render(settings, argv, corebaseline.compare(settings), load)
    else:
        cells = asyncio.run(run(settings, make_workloads(settings.models)))
        if settings.cells_json is not None:
            write_atomic(settings.cells_json, json.dumps([asdict(cell) for cell in cells]))
            return 0
        report = render(settings, argv, cells, load)
    print(report)
    if settings.save:
        path = settings.out / f"core-{stamp()}.md"
        write_atomic(path, report)
        print(f"report written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
