"""``python -m benchmarks http --workers 1,2``: its options, its CPU accounting, its table.

Performance itself is never asserted: only that the counts are read as
meant, that a server's CPU time adds up over every process of its group
(a supervisor and its workers), and that the report compares the counts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from benchmarks.httpbench import Cell, cpu_split_note, parse_args, workers_name
from benchmarks.report import target_checks, workers_table
from benchmarks.servers import RunningServer, ServerSpec
from benchmarks.stats import Window

ROOT = Path(__file__).resolve().parents[2]


def test_workers_alone_measure_only_the_workers_section_at_concurrency_64() -> None:
    settings = parse_args(["--workers", "1,2"])
    assert settings.sections == ("workers",)
    assert settings.workers == (1, 2)
    assert settings.workers_concurrency == (64,)


def test_workers_with_sections_are_added_to_them_each_count_once() -> None:
    settings = parse_args(["--workers", "2,1,2", "--sections", "closed", "--concurrency", "16"])
    assert settings.sections == ("closed", "workers")
    assert settings.workers == (2, 1)
    assert settings.workers_concurrency == (16,)


def test_the_workers_section_alone_defaults_to_1_and_2_and_is_off_by_default() -> None:
    assert parse_args(["--sections", "workers"]).workers == (1, 2)
    assert "workers" not in parse_args([]).sections
    assert parse_args([]).workers == ()


@pytest.mark.parametrize(("text", "error"), [("0", "must be > 0: 0"), ("1,x", "not a number")])
def test_a_bad_count_of_workers_is_an_argparse_error(
    text: str, error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        parse_args(["--workers", text])
    assert stop.value.code == 2
    assert error in capsys.readouterr().err


# A supervisor that spends a little CPU and two workers that spend more, each
# marking a file once it has, then all idle until stopped.
_FLEET = """
import subprocess, sys, time
from pathlib import Path

def burn(seconds, mark):
    while time.process_time() < seconds:
        pass
    Path(mark).touch()
    time.sleep(60)

if sys.argv[1] == "supervisor":
    for i in range(2):
        worker = [sys.executable, "-c", sys.argv[2], "worker", sys.argv[2], sys.argv[3] + str(i)]
        subprocess.Popen(worker)
    burn(0.05, sys.argv[3] + "s")
else:
    burn(0.3, sys.argv[3])
"""


def test_cpu_time_adds_up_over_the_supervisor_and_every_worker(tmp_path: Path) -> None:
    mark = str(tmp_path / "done-")
    argv = (sys.executable, "-c", _FLEET, "supervisor", _FLEET, mark)
    server = RunningServer(ServerSpec("fleet", argv, workers=2), tmp_path / "fleet.log")
    try:
        before = server.cpu_by_process()
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("done-*"))) < 3:
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.05)
        used = server.cpu_by_process()
        assert len(used) == server.spec.processes == 3
        assert server.process.pid in used
        workers = [seconds for pid, seconds in used.items() if pid != server.process.pid]
        assert all(seconds >= 0.25 for seconds in workers)  # /proc counts in clock ticks
        assert server.cpu_seconds() == pytest.approx(sum(used.values()), abs=0.05)
        note = cpu_split_note(server, before, used)
        assert "the supervisor used" in note
        assert "its 2 workers" in note
    finally:
        server.stop()
    assert server.process.poll() is not None


@pytest.mark.parametrize(("two", "verdict"), [(7_000, "met"), (5_200, "MISSED")])
def test_the_table_and_target_compare_2_workers_with_1(
    two: int, verdict: str, make_window: Callable[..., Window]
) -> None:
    cells = [
        Cell("workers", "v2-json-1", workers_name(1), 64, make_window(4_000, 1.0)),
        Cell("workers", "v2-json-1", workers_name(2), 64, make_window(two, 1.8)),
    ]
    table = workers_table(cells, (1, 2))
    assert len(table) == 4
    assert all(row.count("|") == table[0].count("|") for row in table)
    one_row, two_row = (row.strip("|").split("|") for row in table[2:])
    assert one_row[-2].strip() == "1.00x"
    assert two_row[-2].strip() == f"{two / 4_000:.2f}x"
    assert two_row[9].strip() == "-"  # own µs/req: no ceiling was measured
    assert two_row[10].strip() == "15"  # the generator's CPU %
    assert two_row[11].strip() == "10"  # everything else's
    (check,) = target_checks(cells)
    assert "2 workers >= 1.6x the throughput of 1" in check
    assert check.endswith(f"**{verdict}**")


@pytest.mark.timeout(180)
def test_a_quick_run_measures_1_and_2_workers_side_by_side(tmp_path: Path) -> None:
    quick = ["--workers", "1,2", "--quick", "--trees", "3", "--depth", "3"]
    out = ["--out", str(tmp_path), "--workdir", str(tmp_path / "work")]
    command = [sys.executable, "-m", "benchmarks", "http", *quick, *out]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert done.returncode == 0, done.stderr[-3000:]
    (path,) = tmp_path.glob("http-*.md")
    assert not list(tmp_path.glob("*.png"))  # nothing for the plots to draw
    report = path.read_text()
    assert "## Workers (turnout serve --workers N" in report
    rows = [line for line in report.splitlines() if line.startswith(("| 1 | 64 |", "| 2 | 64 |"))]
    assert len(rows) == 2
    assert all(float(row.split("|")[3].replace(",", "")) > 0 for row in rows)  # req/s
    assert "its 2 workers" in report
