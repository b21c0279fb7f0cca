"""The one-core limit and turnout's own cost: the formulas, the raw ORT timing, the report.

The numbers are those of a real run on the 2-core test machine
(``benchmarks/README.md``, concurrency 64, V2 JSON one row): the ceiling at
73 µs of CPU per request, turnout adaptive at 173 µs and 5,771 req/s, and
raw ONNX Runtime at 4.7 µs per row in batches of 64 (213k rows/s).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from benchmarks.core import open_session
from benchmarks.httpbench import ADAPTIVE, CEILING, Cell, Run, Settings
from benchmarks.limit import Limit, OrtCost, batch_sizes, measure_ort, serve_threads
from benchmarks.report import closed_table, render, routing_table, target_checks
from benchmarks.stats import Window
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from turnout.core.execution.convert import LoadedModel, load_model
from turnout.core.execution.runtime import OnnxRuntime

CEILING_US = 73.0
ORT_ROW_US = 4.7  # per row, in batches of 64
Tables = list[list[list[str]]]


def _ort(per_call_us: dict[int, float], calls: int = 1_000) -> OrtCost:
    """Return raw ORT costs as if each size had run ``calls`` calls of ``per_call_us`` each."""
    return OrtCost(
        {rows: us * 1e-6 * calls for rows, us in per_call_us.items()},
        dict.fromkeys(per_call_us, calls),
    )


# Affine per call, 10 µs + 4.7 µs per row: the shape a forest's cost has.
AFFINE = _ort({n: 10.0 + ORT_ROW_US * n for n in (1, 2, 32, 63, 64)})
AT_64 = (10.0 + ORT_ROW_US * 64) / 64  # µs per row in batches of 64


def test_the_limit_is_the_ceilings_http_cost_plus_the_models() -> None:
    limit = Limit.of(CEILING_US * 1e-6, ORT_ROW_US * 1e-6, 1)
    assert limit.per_request == pytest.approx(77.7e-6)
    assert limit.requests_per_second == pytest.approx(12_870, abs=1)
    assert limit.own(173e-6) == pytest.approx(95.3e-6)
    assert limit.share(5_771) == pytest.approx(0.4484, abs=1e-4)


def test_a_request_of_32_rows_pays_the_model_32_times() -> None:
    limit = Limit.of(160e-6, ORT_ROW_US * 1e-6, 32)
    assert limit.model == pytest.approx(150.4e-6)
    assert limit.own(600e-6) == pytest.approx(289.6e-6)
    assert limit.requests_per_second == pytest.approx(3_222, abs=1)


def test_a_server_at_the_limit_owns_nothing_and_reaches_all_of_it() -> None:
    limit = Limit.of(CEILING_US * 1e-6, ORT_ROW_US * 1e-6, 1)
    assert limit.own(limit.per_request) == pytest.approx(0.0, abs=1e-15)
    assert limit.share(limit.requests_per_second) == pytest.approx(1.0)


def test_the_cost_per_row_at_a_mean_batch_is_the_affine_cost_over_it() -> None:
    # Batches of 1 and 2 rows in equal numbers: mean 1.5, (10 + 4.7 * 1.5) / 1.5 µs a row.
    assert AFFINE.per_row(1.5) == pytest.approx((10 + ORT_ROW_US * 1.5) / 1.5 * 1e-6)
    assert AFFINE.per_row(63.9) == pytest.approx((10 + ORT_ROW_US * 63.9) / 63.9 * 1e-6)
    assert AFFINE.per_row(64) == pytest.approx(AT_64 * 1e-6)
    assert AFFINE.per_call(32) == pytest.approx(160.4e-6)


@pytest.mark.parametrize("batch", [0.5, 64.1])
def test_no_cost_per_row_off_the_sizes_measured(batch: float) -> None:
    assert AFFINE.per_row(batch) is None


def test_every_mean_batch_gets_the_whole_sizes_either_side() -> None:
    assert batch_sizes([1.0, 63.9, 32.0, 31.3, 0.0]) == [1, 31, 32, 63, 64]
    assert batch_sizes([]) == []


@pytest.fixture(scope="module")
def tiny_forest() -> LoadedModel:
    X, y = make_classification(n_samples=200, n_features=20, random_state=0)
    return load_model(RandomForestClassifier(n_estimators=3, max_depth=3, random_state=0).fit(X, y))


def test_the_bare_session_has_the_options_turnout_serves_with(tiny_forest: LoadedModel) -> None:
    assert tiny_forest.onnx_bytes is not None
    served = OnnxRuntime(tiny_forest.onnx_bytes, tiny_forest.signature, threads=serve_threads())
    bare = open_session(tiny_forest.onnx_bytes, serve_threads())

    def options(session: Any) -> tuple[object, ...]:
        o = session.get_session_options()
        spinning = o.get_session_config_entry("session.intra_op.allow_spinning")
        return (
            o.intra_op_num_threads,
            o.inter_op_num_threads,
            o.execution_mode,
            o.graph_optimization_level,
            spinning,
            tuple(session.get_providers()),
        )

    assert options(bare) == options(served._session)


def test_raw_ort_is_timed_at_each_size_on_the_core_asked_then_lets_it_go(
    tiny_forest: LoadedModel, tmp_path: Path
) -> None:
    assert tiny_forest.onnx_bytes is not None
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_forest.onnx_bytes)
    rows = np.random.default_rng(0).random((8, 20), dtype=np.float32)  # fewer than 16: repeated
    before = os.sched_getaffinity(0)
    core = min(before)
    cost = measure_ort(model, rows, [1, 16], seconds=0.04, rounds=2, core=core)
    assert os.sched_getaffinity(0) == before
    assert cost.sizes == [1, 16]
    assert cost.core == core
    assert all(cost.calls[n] > 0 and cost.per_call(n) > 0 for n in cost.sizes)


def _cells(make_window: Callable[..., Window], adaptive_cpu_us: float, req_s: int) -> list[Cell]:
    """Return closed-loop cells at concurrency 64: the ceiling, turnout adaptive, MLServer.

    turnout's batches hold 64 rows each: ``req_s`` must be a multiple of 64.
    """
    adaptive = make_window(
        req_s, req_s * adaptive_cpu_us * 1e-6, batch_rows=req_s, batches=req_s // 64
    )
    return [
        Cell("closed", "v2-json-1", CEILING, 64, make_window(13_368, 13_368 * CEILING_US * 1e-6)),
        Cell("closed", "v2-json-1", ADAPTIVE, 64, adaptive),
        Cell("closed", "v2-json-1", "MLServer adaptive", 64, make_window(358, 1.0)),
    ]


def test_turnout_rows_show_own_cost_and_share_of_the_limit(
    make_window: Callable[..., Window], tables: Callable[[str], Tables]
) -> None:
    (table,) = tables("\n".join(closed_table(_cells(make_window, 173.0, 5_760), AFFINE)))
    header, _, *rows = table
    own, share = header.index("own µs/req"), header.index("% of limit")
    by_server = {row[2]: row for row in rows}
    # 173 - 73 - 4.86 (per row at 64, the affine cost) = 95.1 µs; 5,760 of 12,755 req/s.
    assert by_server[ADAPTIVE][own] == f"{173 - CEILING_US - AT_64:.1f}"
    assert by_server[ADAPTIVE][share] == f"{5_760 * (CEILING_US + AT_64) * 1e-6:.0%}" == "45%"
    for server in (CEILING, "MLServer adaptive"):
        assert by_server[server][own] == by_server[server][share] == "-"


def test_without_raw_ort_the_columns_are_dashes(
    make_window: Callable[..., Window], tables: Callable[[str], Tables]
) -> None:
    (table,) = tables("\n".join(closed_table(_cells(make_window, 173.0, 5_760))))
    header, _, *rows = table
    assert {row[header.index("own µs/req")] for row in rows} == {"-"}


@pytest.mark.parametrize(
    ("cpu_us", "req_s", "verdicts"),
    [(173.0, 5_760, ("MISSED", "MISSED")), (90.0, 11_008, ("met", "met"))],
)
def test_the_targets_on_own_cost_and_the_limit(
    make_window: Callable[..., Window],
    cpu_us: float,
    req_s: int,
    verdicts: tuple[str, str],
) -> None:
    checks = target_checks(_cells(make_window, cpu_us, req_s), AFFINE)
    (own,) = [c for c in checks if "own cost <= 20 µs/request" in c]
    (share,) = [c for c in checks if ">= 80% of the limit" in c]
    assert own.startswith("- concurrency 64, turnout adaptive own cost <= 20 µs/request: ")
    assert f"{cpu_us - CEILING_US - AT_64:.1f} µs" in own
    assert own.endswith(f"**{verdicts[0]}**")
    assert share.endswith(f"**{verdicts[1]}**")
    assert not any("in-process" in c for c in checks)  # no in-process figure in an HTTP run


def test_no_limit_targets_without_raw_ort(make_window: Callable[..., Window]) -> None:
    checks = target_checks(_cells(make_window, 173.0, 5_760))
    assert not any("limit" in c or "own cost" in c for c in checks)


def test_a_mirrored_request_pays_the_model_twice(
    make_window: Callable[..., Window], tables: Callable[[str], Tables]
) -> None:
    cells = _cells(make_window, 173.0, 5_760)
    cells.append(
        Cell(
            "routing",
            "v2-json-1",
            "shadow",
            64,
            make_window(4_000, 4_000 * 260e-6, batch_rows=8_000, batches=125),
        )
    )
    (table,) = tables("\n".join(routing_table(cells, AFFINE)))
    header, _, row = table
    # 260 - 73 - 2 rows x 4.86 µs = 177.3 µs.
    assert row[header.index("own µs/req")] == f"{260 - CEILING_US - 2 * AT_64:.0f}"
    assert row[header.index("% of limit")] == f"{4_000 * (CEILING_US + 2 * AT_64) * 1e-6:.0%}"


def test_the_report_lists_raw_ort_and_explains_the_columns(
    make_window: Callable[..., Window],
    quick_settings: Settings,
    tables: Callable[[str], Tables],
) -> None:
    run = Run(quick_settings, cells=_cells(make_window, 173.0, 5_760), ort=AFFINE)
    text = render(run, [], "0.00", [])
    assert "'own µs/req' is its CPU µs per request less the ceiling's" in text
    measured = next(t for t in tables(text) if t[0][0] == "rows per call")
    assert [row[0] for row in measured[2:]] == ["1", "2", "32", "63", "64"]
    assert measured[-1][2:] == ["311", "4.9"]  # µs per call and per row at 64
