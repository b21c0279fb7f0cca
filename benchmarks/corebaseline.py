"""``python -m benchmarks core --baseline REF``: this tree's turnout against REF's, in one run.

Two versions of turnout cannot share a process, so every tree runs in a
child process (``python -m benchmarks core --cells-json FILE``) with its
sources first on ``PYTHONPATH`` (:mod:`benchmarks.gitrefs`). A round runs
each tree once, for ``duration / rounds`` seconds per cell; the trees' order
turns from round to round, so that the drift of a shared machine hits each
alike. Rows per second add up over the rounds; p50 and p99 are the medians
of the rounds' values. Raw ONNX Runtime, when measured, runs in every child:
its row shows how much the machine drifted between the trees' turns.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from benchmarks.core import MODELS, Cell, Settings, _us
from benchmarks.gitrefs import REPO, describe, export_sources
from benchmarks.machine import machine_info

__all__ = ["THIS_TREE", "TreeCells", "compare", "render"]

THIS_TREE = "this tree"

CellKey = tuple[str, int, int, int | None, str]  # model, threads, max rows, concurrency, mode


@dataclass(frozen=True)
class TreeCells:
    """Every round's cells of one tree: what the report compares."""

    tree: str
    described: str
    rounds: list[list[Cell]]


def child_argv(settings: Settings, cells_json: Path) -> list[str]:
    """Return the command line of one tree's child: one round, its share of each cell's time."""
    return [
        sys.executable,
        "-m",
        "benchmarks",
        "core",
        f"--duration={settings.duration / settings.rounds:g}",
        f"--warmup={settings.warmup:g}",
        "--rounds=1",
        "--concurrency",
        *map(str, settings.concurrency),
        "--models",
        *settings.models,
        "--modes",
        *sorted(settings.modes),
        "--runtime-threads",
        *map(str, settings.runtime_threads),
        "--max-batch-rows",
        *map(str, settings.max_batch_rows),
        "--no-save",
        f"--cells-json={cells_json}",
    ]


def compare(settings: Settings) -> list[TreeCells]:
    """Run every tree's child once per round, in turn; return each tree's cells."""
    with tempfile.TemporaryDirectory(prefix="turnout-core-baseline-") as tmp:
        work = Path(tmp)
        sources = {THIS_TREE: REPO / "src"}
        for ref in settings.baselines:
            sources[ref] = export_sources(ref, work / f"tree-{len(sources)}")
        trees = list(sources)
        rounds: dict[str, list[list[Cell]]] = {tree: [] for tree in trees}
        for number in range(settings.rounds):
            shift = number % len(trees)
            for tree in trees[shift:] + trees[:shift]:
                print(f"round {number + 1}/{settings.rounds}: {tree}", file=sys.stderr)
                rounds[tree].append(_run_child(settings, sources[tree], work / "cells.json"))
    return [
        TreeCells(tree, "working tree" if tree == THIS_TREE else describe(tree), rounds[tree])
        for tree in trees
    ]


def _run_child(settings: Settings, src: Path, cells_json: Path) -> list[Cell]:
    # The tree's sources first, then this checkout, whose benchmarks package runs it.
    path = os.pathsep.join([str(src), str(REPO)])
    env = {**os.environ, "PYTHONPATH": path}
    subprocess.run(child_argv(settings, cells_json), cwd=REPO, env=env, check=True)
    return [Cell(**data) for data in json.loads(cells_json.read_text())]


def merged(rounds: list[list[Cell]]) -> dict[CellKey, Cell]:
    """Add up each cell's rounds: calls, rows and seconds summed; p50 and p99 their medians."""
    by_key: dict[CellKey, list[Cell]] = defaultdict(list)
    for cells in rounds:
        for c in cells:
            by_key[(c.model, c.threads, c.max_batch_rows, c.concurrency, c.mode)].append(c)
    out: dict[CellKey, Cell] = {}
    for key, cells in by_key.items():
        calls = sum(c.calls for c in cells)
        out[key] = Cell(
            *key,
            calls=calls,
            rows=sum(c.rows for c in cells),
            seconds=sum(c.seconds for c in cells),
            mean_batch=sum(c.mean_batch * c.calls for c in cells) / calls if calls else 0.0,
            p50=statistics.median(c.p50 for c in cells),
            p99=statistics.median(c.p99 for c in cells),
        )
    return out


def comparison_table(trees: list[TreeCells]) -> list[str]:
    """Return the markdown table: each cell's rows/s and p50 per tree, and their ratio."""
    this, *others = (merged(t.rounds) for t in trees)
    header = "| model | threads | max rows | conc | mode | this tree rows/s | p50 µs |"
    rule = "|---|--:|--:|--:|---|--:|--:|"
    for t in trees[1:]:
        header += f" {t.tree} rows/s | p50 µs | this / {t.tree} |"
        rule += "--:|--:|--:|"
    lines = [header, rule]
    for key, cell in this.items():
        model, threads, max_rows, conc, mode = key
        shown = "seq" if conc is None else str(conc)
        line = (
            f"| {model} | {threads} | {max_rows} | {shown} | {mode}"
            f" | {cell.rows_per_s:,.0f} | {_us(cell.p50)} |"
        )
        for other in others:
            them = other.get(key)
            if them is None:
                line += " - | - | - |"
                continue
            ratio = cell.rows_per_s / them.rows_per_s if them.rows_per_s else float("nan")
            line += f" {them.rows_per_s:,.0f} | {_us(them.p50)} | {ratio:.2f}x |"
        lines.append(line)
    return lines


def render(settings: Settings, argv: list[str], trees: list[TreeCells], load: str) -> str:
    """Return the markdown report of a --baseline run."""
    command = shlex.join(["python", "-m", "benchmarks", "core", *argv])
    models = "; ".join(f"{name} = {MODELS[name]}" for name in settings.models)
    return "\n".join(
        [
            f"# turnout core benchmark, before and after,"
            f" {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
            "",
            f"Command: `{command}`",
            "",
            "| machine | |",
            "|---|---|",
            *(f"| {name} | {value} |" for name, value in machine_info(load)),
            "",
            "| tree | commit |",
            "|---|---|",
            *(f"| {t.tree} | {t.described} |" for t in trees),
            "",
            f"Closed loop, single-row requests; per cell and tree {settings.duration:g} s in"
            f" {settings.rounds} rounds, each tree a child process per round, in turns."
            f" Models: {models}. Rows/s over all rounds; p50 the median of the rounds'.",
            "",
            "## Results",
            "",
            *comparison_table(trees),
            "",
        ]
    )
