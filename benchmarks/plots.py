"""PNG plots of an HTTP run: p99 latency against throughput per server, and batch size against load.

matplotlib is imported here only (the ``bench`` extra); it draws off-screen.
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

from benchmarks.httpbench import Run
from benchmarks.machine import write_atomic

__all__ = ["write_plots"]

KIND = "v2-json-1"


def write_plots(run: Run, out: Path, prefix: str) -> list[Path]:
    """Draw the run's plots into ``out``; return their paths (none without closed or open cells)."""
    if not any(cell.section in ("closed", "open") for cell in run.cells):
        return []
    import matplotlib

    matplotlib.use("Agg")
    paths = [
        _save(_latency_figure(run), out / f"{prefix}-p99-vs-throughput.png"),
        _save(_batch_figure(run), out / f"{prefix}-batch-vs-load.png"),
    ]
    return paths


def _save(figure: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    plt.close(figure)  # type: ignore[arg-type]
    write_atomic(path, buffer.getvalue())
    return path


def _latency_figure(run: Run) -> object:
    """p99 against answered requests/s: closed loop (circles, by concurrency) and open loop."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    series: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for cell in run.cells:
        w = cell.window
        generator_late = w.sent_late > 0.01 * len(w.latencies)  # the generator, not the server
        if cell.kind == KIND and cell.section in ("closed", "open") and w.requests:
            if cell.section == "open" and generator_late:
                continue
            p99 = cell.window.percentile(99) * 1e3
            series[(cell.server, cell.section)].append((cell.window.throughput, p99, cell.load))
    colours: dict[str, str] = {}
    for (server, section), points in sorted(series.items()):
        points.sort(key=lambda point: point[2])  # along the load, as the curve is traced
        colour = colours.setdefault(server, f"C{len(colours)}")
        style = "o-" if section == "closed" else "s--"
        label = f"{server} ({'closed loop' if section == 'closed' else 'open loop'})"
        xs, ys, _ = zip(*points, strict=True)
        axes.plot(xs, ys, style, color=colour, label=label, markersize=4)
        if section == "closed":
            for x, y, load in points:
                axes.annotate(
                    f"c{load:g}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points"
                )
    axes.set_yscale("log")
    axes.set_xlabel("answered requests/s")
    axes.set_ylabel("p99 latency, ms (log)")
    axes.set_title(f"p99 latency vs throughput, {KIND}, server on one core")
    axes.grid(True, which="both", alpha=0.3)
    if series:
        axes.legend(fontsize=7)
    return figure


def _batch_figure(run: Run) -> object:
    """Mean rows per batch against concurrency, per turnout server and request kind."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for cell in run.cells:
        if cell.section == "closed" and cell.window.mean_batch is not None:
            series[f"{cell.server}, {cell.kind}"].append((cell.load, cell.window.mean_batch))
    markers = "osD^v<>Px*"
    for i, (label, points) in enumerate(sorted(series.items())):
        points.sort()
        xs, ys = zip(*points, strict=True)
        # Series that coincide (batching off is one row per batch at every load) would
        # hide one another: each gets its own marker and a small sideways shift.
        shift = 2 ** (0.04 * (i - (len(series) - 1) / 2))
        axes.plot(
            [x * shift for x in xs],
            ys,
            f"{markers[i % len(markers)]}-",
            label=label,
            markersize=5,
            alpha=0.8,
        )
    axes.set_xscale("log", base=2)
    axes.set_xlabel("concurrency (closed loop; series shifted slightly sideways to stay visible)")
    axes.set_ylabel("mean rows per batch")
    axes.set_title("Batch size vs load")
    axes.grid(True, which="both", alpha=0.3)
    if series:
        axes.legend(fontsize=7)
    return figure
