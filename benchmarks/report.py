"""The HTTP benchmark's markdown report: machine and versions, tables, ratios, targets."""

from __future__ import annotations

import datetime as dt
import math
import shlex
from collections.abc import Sequence

from benchmarks.artifacts import model_text
from benchmarks.httpbench import ADAPTIVE, CEILING, Cell, Run, workers_name
from benchmarks.limit import Limit, OrtCost
from benchmarks.machine import machine_info
from benchmarks.payloads import KINDS
from benchmarks.stats import Window

__all__ = [
    "best_mlserver",
    "cell_limit",
    "closed_table",
    "grpc_comparison",
    "ort_table",
    "render",
    "routing_table",
    "target_checks",
    "workers_table",
]

MLSERVERS = ("MLServer adaptive", "MLServer batching off")
TARGET_KIND = "v2-json-1"
WORKERS_SCALING = 1.6  # the target: 2 workers at least this many times 1 worker's throughput
OWN_TARGET = 20e-6  # the target: turnout adaptive's own CPU seconds per request, at most
LIMIT_TARGET = 0.80  # the target: turnout adaptive's share of the one-core limit, at least
GRPC_KIND, HTTP_KINDS = "grpc-raw-1", ("v2-json-1", "v2-binary-1")  # compared under the table
GRPC_LOAD = 64


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:,.1f}" if ms < 100 else f"{ms:,.0f}"


def _ratio(a: float | None, b: float | None, fmt: str = ".2f") -> str:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return "-"
    value = a / b
    return f"{value:.3g}x" if value < 0.1 else f"{value:{fmt}}x"


def _cpu_us(w: Window) -> str:
    cost = w.cpu_per_request
    return "-" if cost is None else f"{cost * 1e6:,.0f}"


def _opt(value: float | None, fmt: str) -> str:
    return "-" if value is None else f"{value:{fmt}}"


def _us(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    us = seconds * 1e6
    return f"{us:,.1f}" if abs(us) < 100 else f"{us:,.0f}"


def _find_cell(
    cells: Sequence[Cell], section: str, kind: str, server: str, load: float
) -> Cell | None:
    for cell in cells:
        if (cell.section, cell.kind, cell.server, cell.load) == (section, kind, server, load):
            return cell
    return None


def _find(
    cells: Sequence[Cell], section: str, kind: str, server: str, load: float
) -> Window | None:
    cell = _find_cell(cells, section, kind, server, load)
    return None if cell is None else cell.window


def best_mlserver(
    cells: Sequence[Cell], section: str, kind: str, load: float
) -> tuple[Window | None, Window | None]:
    """Return MLServer's best throughput window and its best (lowest) p99 window at a load."""
    found = [w for name in MLSERVERS if (w := _find(cells, section, kind, name, load)) is not None]
    if not found:
        return None, None
    return max(found, key=lambda w: w.throughput), min(found, key=lambda w: w.percentile(99))


def cell_limit(cell: Cell, cells: Sequence[Cell], ort: OrtCost | None) -> Limit | None:
    """Return the one-core limit of a turnout cell, or None if this run cannot tell it.

    The serving part is the ceiling's CPU per request in the closed loop at
    the same kind and concurrency (so over gRPC, the ceiling's grpc.aio
    server's, and over HTTP its aiohttp server's); the model part is raw ORT's CPU per row at
    the cell's mean batch, times the rows each request had run: the request's
    rows in the closed loop and the workers section, and in the routing
    section the rows executed per request answered (a mirrored request runs
    twice).
    """
    w = cell.window
    if ort is None or w.mean_batch is None or not w.requests:
        return None
    ceiling = _find(cells, "closed", cell.kind, CEILING, cell.load)
    per_row = ort.per_row(w.mean_batch)
    if ceiling is None or ceiling.cpu_per_request is None or per_row is None:
        return None
    routed = cell.section == "routing"
    rows = (w.batch_rows or 0) / w.requests if routed else KINDS[cell.kind].rows
    return Limit.of(ceiling.cpu_per_request, per_row, rows)


def _limit_columns(cell: Cell, cells: Sequence[Cell], ort: OrtCost | None) -> tuple[str, str]:
    """Return a cell's own µs per request and its % of the limit, as shown."""
    limit = cell_limit(cell, cells, ort)
    cost = cell.window.cpu_per_request
    if limit is None or cost is None:
        return "-", "-"
    return _us(limit.own(cost)), f"{limit.share(cell.window.throughput):.0%}"


def _row(cell: Cell, cells: Sequence[Cell], load_text: str, extra: Sequence[str] = ()) -> str:
    w = cell.window
    ceiling = _find(cells, cell.section, cell.kind, CEILING, cell.load)
    fastest, lowest = best_mlserver(cells, cell.section, cell.kind, cell.load)
    p50, p99, p999 = (_ms(w.percentile(p)) for p in (50, 99, 99.9))
    return (
        f"| {cell.kind} | {load_text} | {cell.server} | {w.throughput:,.0f}"
        f" | {p50} | {p99} | {p999}"
        f" | {_opt(w.mean_batch, '.1f')} | {_opt(w.cpu_percent, '.0f')} | {_cpu_us(w)}"
        f"{''.join(f' | {text}' for text in extra)}"
        f" | {w.errors} | {_ratio(w.throughput, ceiling and ceiling.throughput)}"
        f" | {_ratio(w.percentile(99), ceiling and ceiling.percentile(99))}"
        f" | {_ratio(w.throughput, fastest and fastest.throughput)}"
        f" | {_ratio(w.percentile(99), lowest and lowest.percentile(99))} |"
    )


_HEADER = (
    "| kind | {load} | server | req/s | p50 ms | p99 ms | p99.9 ms | mean batch | CPU %"
    " | CPU µs/req | errors"
    " | req/s vs ceiling | p99 vs ceiling | req/s vs MLServer | p99 vs MLServer |"
)
_RULE = "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
_LIMIT_HEADER = " own µs/req | % of limit |"  # the closed loop's, after CPU µs/req


def closed_table(cells: Sequence[Cell], ort: OrtCost | None = None) -> list[str]:
    """Return the closed-loop table; turnout's rows with their own cost and % of the limit."""
    header = _HEADER.format(load="conc").replace(" CPU µs/req |", " CPU µs/req |" + _LIMIT_HEADER)
    lines = [header, _RULE + "--:|--:|"]
    lines += [
        _row(c, cells, f"{c.load:g}", _limit_columns(c, cells, ort))
        for c in cells
        if c.section == "closed"
    ]
    return lines


def grpc_comparison(cells: Sequence[Cell]) -> list[str]:
    """Return a line per server comparing gRPC with HTTP JSON and binary at concurrency 64."""
    lines = []
    servers = dict.fromkeys(c.server for c in cells if c.section == "closed")
    for server in servers:
        grpc = _find(cells, "closed", GRPC_KIND, server, GRPC_LOAD)
        http = [_find(cells, "closed", kind, server, GRPC_LOAD) for kind in HTTP_KINDS]
        if grpc is None or None in http:
            continue
        json, binary = (w for w in http if w is not None)
        client = grpc.generator_cpu_percent
        lines.append(
            f"gRPC at concurrency {GRPC_LOAD}, {server}: {GRPC_KIND} {grpc.throughput:,.0f} req/s,"
            f" {_ratio(grpc.throughput, json.throughput)} {HTTP_KINDS[0]}'s"
            f" {json.throughput:,.0f} and {_ratio(grpc.throughput, binary.throughput)}"
            f" {HTTP_KINDS[1]}'s {binary.throughput:,.0f}; CPU µs/req {_cpu_us(grpc)} against"
            f" {_cpu_us(json)} and {_cpu_us(binary)}"
            + ("" if client is None else f"; the gRPC client used {client:.0f}% of its core")
            + "."
        )
    return [*lines, ""] if lines else []


def open_table(cells: Sequence[Cell]) -> list[str]:
    """Return the open-loop table: req/s over the scheduled window, 'late' = sent late, 'tail'."""
    header = _HEADER.format(load="rate").replace(" errors |", " errors | late | tail s |")
    lines = [header, _RULE + "--:|--:|"]
    for c in cells:
        if c.section == "open":
            row = _row(c, cells, f"{c.load:g}/s")
            parts = row.split(" | ")
            parts.insert(11, str(c.window.sent_late))
            parts.insert(12, f"{c.window.tail_seconds:.2f}")
            lines.append(" | ".join(parts))
    return lines


def routing_table(cells: Sequence[Cell], ort: OrtCost | None = None) -> list[str]:
    """Return the routing-cost table, each setup against plain active routing."""
    lines = [
        "| routing | conc | req/s | p50 ms | p99 ms | p99.9 ms | mean batch (primary + mirror)"
        " | CPU % | CPU µs/req | own µs/req | % of limit | errors | req/s vs active"
        " | p99 vs active |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for c in cells:
        if c.section != "routing":
            continue
        w = c.window
        active = _find(cells, "routing", c.kind, "active", c.load)
        own, share = _limit_columns(c, cells, ort)
        lines.append(
            f"| {_ROUTING_TEXT.get(c.server, c.server)} | {c.load:g} | {w.throughput:,.0f}"
            f" | {_ms(w.percentile(50))} | {_ms(w.percentile(99))} | {_ms(w.percentile(99.9))}"
            f" | {_opt(w.mean_batch, '.1f')} | {_opt(w.cpu_percent, '.0f')} | {_cpu_us(w)}"
            f" | {own} | {share}"
            f" | {w.errors} | {_ratio(w.throughput, active and active.throughput)}"
            f" | {_ratio(w.percentile(99), active and active.percentile(99))} |"
        )
    return lines


def workers_table(
    cells: Sequence[Cell], counts: Sequence[int], ort: OrtCost | None = None
) -> list[str]:
    """Return the workers table: each ``--workers N`` against the fewest workers measured.

    Own µs/req as in the closed loop, but no % of the limit: that limit is
    one core's, and these servers may use every core.
    """
    fewest = min(counts)
    lines = [
        "| workers | conc | req/s | p50 ms | p99 ms | p99.9 ms | mean batch | server CPU %"
        " | server CPU µs/req | own µs/req | generator CPU % | other CPU % | errors"
        f" | req/s vs {fewest} | CPU µs/req vs {fewest} |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    loads = sorted({c.load for c in cells if c.section == "workers"})
    for load in loads:
        base = _find(cells, "workers", TARGET_KIND, workers_name(fewest), load)
        for count in counts:
            cell = _find_cell(cells, "workers", TARGET_KIND, workers_name(count), load)
            if cell is None:
                continue
            w = cell.window
            own, _ = _limit_columns(cell, cells, ort)
            lines.append(
                f"| {count} | {load:g} | {w.throughput:,.0f} | {_ms(w.percentile(50))}"
                f" | {_ms(w.percentile(99))} | {_ms(w.percentile(99.9))}"
                f" | {_opt(w.mean_batch, '.1f')} | {_opt(w.cpu_percent, '.0f')} | {_cpu_us(w)}"
                f" | {own} | {_opt(w.generator_cpu_percent, '.0f')}"
                f" | {_opt(w.other_cpu_percent, '.0f')} | {w.errors}"
                f" | {_ratio(w.throughput, base and base.throughput)}"
                f" | {_ratio(w.cpu_per_request, base and base.cpu_per_request)} |"
            )
    return lines


_ROUTING_TEXT = {
    "active": "active (one version)",
    "weighted": "weighted 50/50",
    "sticky": "sticky 50/50 (64 keys)",
    "shadow": "shadow, 100% mirrored",
    "shadow_slow": "shadow, mirror slow (+50 ms per batch)",
    "shadow_fail": "shadow, mirror failing every batch",
}


def _check(what: str, ok: bool | None, detail: str) -> str:
    verdict = "not measured" if ok is None else "met" if ok else "MISSED"
    return f"- {what}: {detail}: **{verdict}**"


def target_checks(cells: Sequence[Cell], ort: OrtCost | None = None) -> list[str]:
    """Return the issue's targets, each with the value measured in this run and a verdict."""
    lines = []
    ad64 = _find(cells, "closed", TARGET_KIND, ADAPTIVE, 64)
    ce64 = _find(cells, "closed", TARGET_KIND, CEILING, 64)
    if ad64 and ce64:
        share = ad64.throughput / ce64.throughput
        p99 = ad64.percentile(99) / ce64.percentile(99)
        lines.append(
            _check(
                "concurrency 64, adaptive throughput >= 85% of the ceiling's",
                share >= 0.85,
                f"{share:.0%}",
            )
        )
        lines.append(
            _check("concurrency 64, adaptive p99 <= 1.3x the ceiling's", p99 <= 1.3, f"{p99:.2f}x")
        )
    lines += _limit_checks(cells, ort)
    ad1 = _find(cells, "closed", TARGET_KIND, ADAPTIVE, 1)
    ce1 = _find(cells, "closed", TARGET_KIND, CEILING, 1)
    if ad1 and ce1:
        added = (ad1.percentile(50) - ce1.percentile(50)) * 1e3
        lines.append(
            _check(
                "concurrency 1, adaptive p50 within 0.25 ms of the ceiling's",
                added <= 0.25,
                f"+{added:.3f} ms",
            )
        )
    fastest, _ = best_mlserver(cells, "closed", TARGET_KIND, 64)
    if ad64 and fastest:
        times = ad64.throughput / fastest.throughput
        lines.append(
            _check(
                "concurrency 64, >= 5x MLServer's better throughput", times >= 5, f"{times:.1f}x"
            )
        )
    elif ad64:
        lines.append(_check("against MLServer", None, "MLServer not set up"))
    loads = sorted({c.load for c in cells if c.section == "closed" and c.kind == TARGET_KIND})
    worse = []
    compared = 0
    for load in loads:
        ad = _find(cells, "closed", TARGET_KIND, ADAPTIVE, load)
        _, lowest = best_mlserver(cells, "closed", TARGET_KIND, load)
        if ad and lowest:
            compared += 1
            if not ad.percentile(99) < lowest.percentile(99):
                worse.append(f"{load:g}")
    if compared:
        detail = (
            "lower at every concurrency"
            if not worse
            else f"not lower at concurrency {', '.join(worse)}"
        )
        lines.append(
            _check("p99 lower than MLServer's better p99 at every concurrency", not worse, detail)
        )
    for load in sorted({c.load for c in cells if c.section == "routing"}):
        active = _find(cells, "routing", TARGET_KIND, "active", load)
        shadow = _find(cells, "routing", TARGET_KIND, "shadow", load)
        failing = _find(cells, "routing", TARGET_KIND, "shadow_fail", load)
        if active and shadow:
            cost = 1 - shadow.throughput / active.throughput  # negative: shadow was faster
            lines.append(
                _check(
                    f"concurrency {load:g}, 100% shadow costs the primary <= 10% throughput",
                    cost <= 0.10,
                    f"costs {cost:.0%}",
                )
            )
        if active and failing:
            delta = failing.errors / max(failing.requests, 1) - active.errors / max(
                active.requests, 1
            )
            lines.append(
                _check(
                    f"concurrency {load:g}, a failing shadow adds no errors to the primary",
                    delta == 0,
                    f"{failing.errors} errors in {failing.requests:,} requests",
                )
            )
    for load in sorted({c.load for c in cells if c.section == "workers"}):
        one = _find(cells, "workers", TARGET_KIND, workers_name(1), load)
        two = _find(cells, "workers", TARGET_KIND, workers_name(2), load)
        if one and two and one.throughput:
            times = two.throughput / one.throughput
            lines.append(
                _check(
                    f"concurrency {load:g}, 2 workers >= {WORKERS_SCALING:g}x the throughput of 1",
                    times >= WORKERS_SCALING,
                    f"{times:.2f}x",
                )
            )
    return lines


def _limit_checks(cells: Sequence[Cell], ort: OrtCost | None) -> list[str]:
    """Return the targets on turnout adaptive's own cost and share of the limit at 64."""
    cell = _find_cell(cells, "closed", TARGET_KIND, ADAPTIVE, 64)
    limit = None if cell is None else cell_limit(cell, cells, ort)
    if cell is None or limit is None or cell.window.cpu_per_request is None:
        return []
    own = limit.own(cell.window.cpu_per_request)
    share = limit.share(cell.window.throughput)
    return [
        _check(
            f"concurrency 64, turnout adaptive own cost <= {OWN_TARGET * 1e6:.0f} µs/request",
            own <= OWN_TARGET,
            f"{_us(own)} µs ({_us(cell.window.cpu_per_request)} µs, less the ceiling's"
            f" {_us(limit.stack)} and ONNX Runtime's {_us(limit.model)})",
        ),
        _check(
            f"concurrency 64, adaptive >= {LIMIT_TARGET:.0%} of the limit",
            share >= LIMIT_TARGET,
            f"{share:.0%} ({cell.window.throughput:,.0f} of {limit.requests_per_second:,.0f}"
            " req/s)",
        ),
    ]


def ort_table(ort: OrtCost) -> list[str]:
    """Return the table of raw ONNX Runtime's CPU per call and per row at each batch size."""
    lines = [
        "| rows per call | calls timed | CPU µs per call | CPU µs per row |",
        "|--:|--:|--:|--:|",
    ]
    for rows in ort.sizes:
        per_call = ort.per_call(rows)
        lines.append(f"| {rows} | {ort.calls[rows]:,} | {_us(per_call)} | {_us(per_call / rows)} |")
    return lines


def render(run: Run, argv: Sequence[str], load: str, plots: Sequence[str]) -> str:
    """Return the whole markdown report."""
    s = run.settings
    command = shlex.join(["python", "-m", "benchmarks", "http", *argv])
    lines = [
        f"# turnout HTTP benchmark, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
        f"Command: `{command}`",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in machine_info(load, usable=run.usable_cores)),
        *(f"| {name} | {value} |" for name, value in run.versions.items()),
        "",
        f"Model: {model_text(s.trees, s.depth)}."
        f" Per cell and server {s.seconds:g} s measured in {s.rounds} round-robin slice(s),"
        f" after {s.warmup:g} s warm-up per server. Latency is client-side. CPU % is the server"
        " process group's CPU time over the window (100 = one core). Mean batch is rows per"
        " executed batch from turnout's /metrics. Ratios compare servers measured side by side"
        " in this run; 'vs MLServer' is against MLServer's better run (adaptive batching on or"
        " off) at that load. For turnout, 'own µs/req' is its CPU µs per request less the"
        " ceiling's (closed loop, same kind and concurrency: for gRPC, its grpc.aio server's)"
        " and less raw ONNX Runtime's CPU"
        " per row at turnout's mean batch times the rows per request; '% of limit' is its"
        " req/s over the limit of one core, 1 / (the ceiling's CPU s per request + that ONNX"
        " Runtime cost). Raw ONNX Runtime is timed in this run (its table is below).",
        "",
        *(f"- {note}" for note in dict.fromkeys(run.notes)),
        "",
    ]
    checks = target_checks(run.cells, run.ort)
    if checks:
        lines += ["## Targets", "", *checks, ""]
    if any(c.section == "closed" for c in run.cells):
        lines += ["## Closed loop", "", *closed_table(run.cells, run.ort), ""]
        lines += grpc_comparison(run.cells)
    sections = {
        "open": (
            "Open loop (V2 JSON, one row)",
            "Requests due at a fixed rate, latency timed from each one's due time. req/s is the"
            " requests answered over the scheduled window (answered / window length), whatever"
            " the wait for the last replies; 'tail s' is that wait, from the last request's due"
            " time to the last reply (longest slice). 'late' counts requests the generator itself"
            " sent over 1 ms after their due time, for whatever reason (busy loop, late wake-up):"
            " where that is over 1% of them, the row measures the generator as much as the"
            " server (and the plot leaves it out).",
            lambda: open_table(run.cells),
        ),
        "routing": (
            "Routing and resilience cost (turnout adaptive, V2 JSON, one row)",
            "One server, one model per routing setup (versions v1 and v2 are the same forest),"
            " measured side by side. Under shadow routing every request is also run on v2;"
            " latency and errors are the primary's (what the client sees). Own µs/req and % of"
            " limit count the model rows each answered request had run (2 under 100% shadow)"
            " against the closed loop's ceiling at the same concurrency.",
            lambda: routing_table(run.cells, run.ort),
        ),
        "workers": (
            "Workers (turnout serve --workers N, turnout adaptive, V2 JSON, one row)",
            "One server per N, measured side by side, each free to use every usable core; the"
            " load generator stays pinned to its own core, which the servers may use too."
            " Server CPU is the whole process group's: the"
            " supervisor and every worker. Generator CPU is the load generator's own (wrk, or"
            " the built-in client) over the same windows, % of one core; other CPU is the rest"
            " of the machine's busy time over them (other processes, the kernel, the"
            " hypervisor's steal). Mean batch is over all workers: any worker's /metrics"
            " reports every worker, as last published (up to a second old). Ratios are against"
            " the fewest workers measured. Own µs/req is against the closed loop's ceiling at the"
            " same concurrency; no % of limit, as that limit is one core's.",
            lambda: workers_table(run.cells, s.workers, run.ort),
        ),
    }
    for section, (heading, text, table) in sections.items():
        if any(c.section == section for c in run.cells):
            lines += [f"## {heading}", "", text, "", *table(), ""]
    if run.ort is not None:
        where = "" if run.ort.core is None else f" on CPU {run.ort.core}"
        lines += [
            "## Raw ONNX Runtime (the model's own cost, this run)",
            "",
            f"Bare `session.run` calls on the model file turnout serves, with turnout's session"
            f" options, timed in CPU time in the harness process{where} (the servers' core) once"
            " every server had stopped, at each whole batch size around the mean batches"
            " above. The cost per row at a mean batch B interpolates the cost per call"
            " linearly between the sizes around B, and divides by B.",
            "",
            *ort_table(run.ort),
            "",
        ]
    if run.profile is not None:
        lines += [
            "## Where the time goes (py-spy, turnout adaptive, V2 JSON, concurrency 64)",
            "",
            "```",
            *run.profile.splitlines()[:14],
            "```",
            "",
        ]
    if plots:
        lines += ["## Plots", "", *(f"![{name}]({name})" for name in plots), ""]
    return "\n".join(lines)
