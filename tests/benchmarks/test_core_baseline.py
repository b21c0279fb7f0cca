"""Smoke test of ``python -m benchmarks core --baseline REF``: both trees run and are compared.

Performance itself is never asserted: only that each tree ran in its own
child process and the report sets their cells side by side.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_a_baseline_run_reports_both_trees_cell_by_cell(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "core",
        "--quick",
        "--models",
        "lr",
        "--concurrency",
        "4",
        "--modes",
        "adaptive",
        "raw",
        "--baseline",
        "HEAD",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "round 2/2: HEAD" in done.stderr
    (path,) = tmp_path.glob("core-*.md")
    report = path.read_text()
    assert "| this tree | working tree |" in report
    rows = [line for line in report.splitlines() if line.startswith("| lr | 1 |")]
    modes = {row.split("|")[5].strip() for row in rows}
    assert {"turnout adaptive", "raw ORT, batch 1", "raw ORT, batch B"} <= modes
    # Each row: this tree's rows/s and p50, HEAD's, and the ratio of the two.
    assert all(row.rstrip("|").rstrip().endswith("x") for row in rows)


def test_an_unknown_ref_is_refused_before_anything_runs() -> None:
    command = [sys.executable, "-m", "benchmarks", "core", "--baseline", "no-such-ref"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--baseline no-such-ref: not a commit" in done.stderr
