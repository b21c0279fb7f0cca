"""``python -m benchmarks soak``, a few seconds of it against a real ``turnout serve``.

Whether memory stays flat is never asserted here: a run this short measures
start-up, not a soak. What is checked is that the report is made of real
measurements: RSS sampled from the server's process, requests answered and
outcomes recorded by the server, and growth sites read from its snapshots.
The run is a subprocess: the harness pins its own process to a core.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
Tables = list[list[list[str]]]


def _number(text: str) -> float:
    """Read the leading number of a cell such as "1,234 (617/s)" or "187.3 MB"."""
    return float(text.split()[0].replace(",", "").rstrip("%"))


@pytest.mark.timeout(60)
def test_a_short_soak_reports_real_samples_answers_and_growth_sites(
    tmp_path: Path, tables: Callable[[str], Tables]
) -> None:
    command = [
        *(sys.executable, "-m", "benchmarks", "soak"),
        *("--seconds", "5", "--baseline", "2", "--sample-every", "0.5"),
        *("--concurrency", "8", "--trees", "3", "--depth", "3"),
        *("--tracemalloc-frames", "3"),  # so the callers of each site are listed too
        *("--out", str(tmp_path), "--workdir", str(tmp_path / "work")),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=55)
    # 1 is a missed target, which a few seconds from start-up may well be; not a failure here.
    assert done.returncode in (0, 1), done.stderr[-3000:]
    (path,) = tmp_path.glob("soak-*.md")
    text = path.read_text()
    result, series, sites = tables(text)[:3]

    figures = {row[0]: row[1] for row in result[2:]}
    assert _number(figures["RSS at 2 s (baseline)"]) > 20  # MB: a Python server with a model
    assert _number(figures["requests answered"]) > 0
    assert _number(figures["of which weighted"]) > 0
    assert _number(figures["of which shadow"]) > 0
    assert _number(figures["outcomes posted (errors)"]) > 0
    assert figures["inference errors"] == "0"
    # The server's own counts: outcomes it recorded, copies its shadow compared.
    recorded = figures["outcomes recorded, weighted"]  # e.g. "v1 120, v2 131"
    assert sum(int(part.split()[1].replace(",", "")) for part in recorded.split(", ")) > 0
    assert _number(figures["shadow v2 of v1"]) > 0
    assert figures["target: growth < 5%"] in ("met", "**MISSED**")
    assert (done.returncode == 0) == (figures["target: growth < 5%"] == "met")

    assert series[0][:2] == ["t (s)", "RSS"]
    rss = [_number(row[1]) for row in series[2:]]
    assert len(rss) >= 3  # the first sample, the baseline and the end at least
    assert all(mb > 20 for mb in rss)
    assert any("(baseline)" in row[0] for row in series[2:])

    assert sites[0][:2] == ["#", "growth"]
    assert len(sites) - 2 == 15
    assert all(row[4].startswith("`") and ":" in row[4] for row in sites[2:])  # file:line
    assert "Called from (innermost first):" in text
