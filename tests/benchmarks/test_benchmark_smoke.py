"""Smoke test of ``python -m benchmarks http``: it runs and writes a well-formed report and plots.

Performance itself is never asserted here: the numbers belong to the
machine. The run is the quick mode on a tiny forest, in a subprocess
(the harness pins its own process to a core).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

Tables = list[list[list[str]]]

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ("aiohttp ceiling", "turnout batching off", "turnout adaptive")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("results")
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "http",
        "--quick",
        "--trees",
        "3",
        "--depth",
        "3",
        "--no-peers",
        "--kinds",
        "v2-json-1",
        "v1-1",
        "grpc-raw-1",
        "--concurrency",
        "4",
        "--rates",
        "50",
        "--out",
        str(out),
        "--workdir",
        str(out / "work"),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = out.glob("http-*.md")
    return path.read_text(), out


@pytest.mark.timeout(180)
def test_the_report_has_every_section_in_well_formed_tables(
    report: tuple[str, Path], tables: Callable[[str], Tables]
) -> None:
    text, _ = report
    for heading in ("## Targets", "## Closed loop", "## Open loop", "## Routing and resilience"):
        assert heading in text
    found = tables(text)
    assert len(found) >= 4  # machine, closed loop, open loop, routing
    for table in found:
        width = len(table[0])
        assert all(len(row) == width for row in table), table[0]
        assert set(table[1][0]) <= set("-:"), "no header rule"
    closed = next(t for t in found if t[0][:3] == ["kind", "conc", "server"])
    served = {row[2] for row in closed[2:]}
    assert served == set(SERVERS)
    for row in closed[2:]:
        assert float(row[3].replace(",", "")) > 0, row  # req/s
    # gRPC is served by every server, the ceiling too (its grpc.aio server).
    grpc_rows = {row[2] for row in closed[2:] if row[0] == "grpc-raw-1"}
    assert grpc_rows == set(SERVERS)
    ceiling = next(r for r in closed[2:] if r[:3] == ["grpc-raw-1", "4", "aiohttp ceiling"])
    assert _number(ceiling[closed[0].index("CPU µs/req")]) > 0
    assert ceiling[closed[0].index("req/s vs ceiling")] == "1.00x"
    (replayed,) = [line for line in text.splitlines() if "recorded answer" in line]
    assert "grpc-raw-1 " in replayed  # it replays turnout's serialized ModelInferResponse
    # Machine and versions at the top.
    assert "| Python |" in text
    assert "| onnxruntime |" in text


def _number(text: str) -> float:
    return float(text.replace(",", "").removesuffix("%"))


@pytest.mark.timeout(180)
def test_turnout_rows_show_their_own_cost_and_share_of_the_limit(
    report: tuple[str, Path], tables: Callable[[str], Tables]
) -> None:
    text, _ = report
    found = tables(text)
    closed = next(t for t in found if t[0][:3] == ["kind", "conc", "server"])
    own, share = closed[0].index("own µs/req"), closed[0].index("% of limit")
    assert own == closed[0].index("CPU µs/req") + 1
    for row in closed[2:]:
        if row[2].startswith("turnout"):  # gRPC rows too: against the gRPC ceiling
            _number(row[own])  # a number, whatever its value on this machine
            assert row[share].endswith("%"), row
        else:
            assert row[own] == row[share] == "-", row
    routing = next(t for t in found if t[0][0] == "routing")
    assert all(row[routing[0].index("% of limit")].endswith("%") for row in routing[2:])
    assert "## Raw ONNX Runtime" in text
    measured = next(t for t in found if t[0][0] == "rows per call")
    assert all(_number(row[2]) > 0 for row in measured[2:])  # CPU µs per call


@pytest.mark.timeout(180)
def test_the_plots_are_pngs(report: tuple[str, Path]) -> None:
    text, out = report
    plots = sorted(out.glob("http-*.png"))
    assert len(plots) == 2
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({plot.name})" in text
