"""The model repository: atomic writes, and a ModelServer that survives a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from turnout import (
    BatchingConfig,
    BreakerConfig,
    Fallback,
    InvalidConfigError,
    InvalidNameError,
    ModelServer,
    RoutingConfig,
    StoreError,
    TurnoutError,
)
from turnout.core.execution.convert import load_model
from turnout.core.state.repository import ModelStore
from turnout.core.state.repository_files import atomic_write

MODEL = "games"


def server(repository: Path) -> ModelServer:
    return ModelServer(repository=repository, entry_points=False, seed=0)


def stray_temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


# -- atomic writes ------------------------------------------------------------------------


def test_atomic_write_replaces_the_content(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    atomic_write(path, b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new"
    assert stray_temp_files(tmp_path) == []


def test_a_write_failing_midway_leaves_the_old_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.json"
    atomic_write(path, b"old")

    def crash(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write(path, b"new")
    assert path.read_bytes() == b"old"
    assert stray_temp_files(tmp_path) == []


# -- paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["..", "../evil", "a/b", ".hidden", ""])
def test_unsafe_names_are_refused(tmp_path: Path, name: str) -> None:
    store = ModelStore(tmp_path / "repo")
    with pytest.raises(InvalidNameError):
        store.path(name)
    with pytest.raises(InvalidNameError):
        store.path("model", name)


def test_a_symlink_out_of_the_repository_is_refused(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "repo")
    (tmp_path / "elsewhere").mkdir()
    (store.root / "escape").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(StoreError, match="outside"):
        store.path("escape")
    with pytest.raises(StoreError, match="outside"):
        store.path("escape", "v1")


def test_a_repository_refuses_mock_mode(tmp_path: Path) -> None:
    with pytest.raises(InvalidConfigError, match="mock_mode"):
        ModelServer(repository=tmp_path, mock_mode=True)


# -- a server that survives a restart -------------------------------------------------------


async def test_a_restarted_server_serves_what_it_served(
    tmp_path: Path, binary_data: Any, binary_model: Any, binary_model_v2: Any
) -> None:
    rows = binary_data.records(20)
    batching = BatchingConfig(max_batch_rows=16, max_queue_rows=4096, max_request_rows=256)
    breaker = BreakerConfig(cool_down=2.0, params={"threshold": 0.3})
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", binary_model, metadata={"team": "a", "n": 3})
        await first.deploy_model(
            MODEL,
            "v2",
            binary_model_v2,
            output="label",
            batching=batching,
            breaker=breaker,
            error_threshold=0.2,
            allow_nan=True,
        )
        await first.setup_ab_test(MODEL, ["v1", "v2"], [0.7, 0.3])
        await first.set_fallback(MODEL, Fallback(version="v1"))
        before = {v: await first.predict(MODEL, rows, version=v) for v in ("v1", "v2")}
        status = first.get_all_models_status()
        routing = first.get_routing(MODEL)
        active = dict(first.active_models)

    async with server(tmp_path) as second:
        after = {v: await second.predict(MODEL, rows, version=v) for v in ("v1", "v2")}
        assert dict(second.active_models) == active == {MODEL: "v1"}
        assert second.get_routing(MODEL) == routing
        assert second._fallbacks[MODEL] == Fallback(version="v1")
        restored = second.get_all_models_status()
    for version in ("v1", "v2"):
        np.testing.assert_allclose(after[version], before[version], rtol=1e-6)
        for key in ("metadata", "features", "output", "batching", "routing", "status"):
            assert restored[MODEL][version][key] == status[MODEL][version][key], key
        for key in ("source", "deployed_at"):
            assert restored[MODEL][version][key] == status[MODEL][version][key], key
    assert restored[MODEL]["v2"]["output"] == "label"


async def test_restore_is_idempotent(tmp_path: Path, binary_model: Any) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", binary_model)
    async with server(tmp_path) as second:
        await second.restore()
        assert list(second.get_all_models_status()[MODEL]) == ["v1"]


async def test_active_changes_and_retirement_are_stored(
    tmp_path: Path, binary_model: Any, binary_model_v2: Any
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", binary_model)
        await first.deploy_model(MODEL, "v2", binary_model_v2)
        await first.set_active_version(MODEL, "v2")
        await first.retire_model(MODEL, "v1")
    assert not (tmp_path / MODEL / "v1").exists()
    assert (tmp_path / MODEL / "v2" / "model.onnx").is_file()
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {MODEL: "v2"}
        await second.retire_model(MODEL, "v2")
    assert not (tmp_path / MODEL).exists()
    assert stray_temp_files(tmp_path) == []


async def test_broken_entries_are_skipped_with_a_warning(
    tmp_path: Path, binary_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", binary_model)
        await first.deploy_model(MODEL, "v2", binary_model)
        await first.deploy_model("other", "v1", binary_model)
    (tmp_path / MODEL / "v2" / "model.onnx").unlink()  # a version without its model
    (tmp_path / "other" / "v1" / "deployment.json").write_text("{not json")
    (tmp_path / MODEL / "v3").mkdir()  # an empty version directory
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {MODEL: "v1"}
        assert list(second.get_all_models_status()) == [MODEL]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "v2" in warned
    assert "other" in warned


async def test_a_corrupt_model_json_falls_back_to_no_active_version(
    tmp_path: Path, binary_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", binary_model)
    (tmp_path / MODEL / "model.json").write_bytes(b"\x00garbage")
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {}
        assert second.get_routing(MODEL) == RoutingConfig()
    assert "model.json" in caplog.text


async def test_a_stored_routing_that_no_longer_fits_becomes_active(
    tmp_path: Path, binary_model: Any, binary_model_v2: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", binary_model)
        await first.deploy_model(MODEL, "v2", binary_model_v2)
        await first.setup_ab_test(MODEL, ["v1", "v2"], [0.5, 0.5])
    (tmp_path / MODEL / "v2" / "model.onnx").write_bytes(b"changed")  # fails its checksum
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(tmp_path) as second:
        assert second.get_routing(MODEL) == RoutingConfig()
        assert dict(second.active_models) == {MODEL: "v1"}
    assert "no longer fits" in caplog.text


async def test_metadata_that_is_not_json_is_refused_up_front(
    tmp_path: Path, binary_model: Any
) -> None:
    async with server(tmp_path) as first:
        with pytest.raises(InvalidConfigError, match="JSON"):
            await first.deploy_model(MODEL, "v1", binary_model, metadata={"when": object()})
        assert not first.get_all_models_status()


# -- restored state equals live state, whatever happened before -------------------------------

VERSIONS = ("v1", "v2", "v3")
OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["deploy", "retire", "activate", "split", "fallback", "no-fallback"]),
        st.sampled_from(VERSIONS),
        st.sampled_from(VERSIONS),
    ),
    max_size=12,
)


def snapshot(server: ModelServer) -> dict[str, Any]:
    """What a restart must keep: versions and their metadata, active, routing, fallbacks."""
    status = server.get_all_models_status()
    return {
        "versions": {
            m: {v: info["metadata"] for v, info in vs.items()} for m, vs in status.items()
        },
        "active": dict(server.active_models),
        "routing": {m: server.get_routing(m) for m in status},
        "fallbacks": dict(server._fallbacks),
    }


async def apply(server: ModelServer, operations: list[tuple[str, str, str]], onnx: bytes) -> None:
    for name, a, b in operations:
        try:
            if name == "deploy":
                await server.deploy_model(MODEL, a, onnx, metadata={"v": a}, replace=True)
            elif name == "retire":
                await server.retire_model(MODEL, a)
            elif name == "activate":
                await server.set_active_version(MODEL, a)
            elif name == "split" and a != b:
                await server.setup_ab_test(MODEL, [a, b], [0.25, 0.75])
            elif name == "fallback":
                await server.set_fallback(MODEL, Fallback(version=a))
            elif name == "no-fallback":
                await server.set_fallback(MODEL, Fallback(value=0.5) if a == "v1" else None)
        except TurnoutError:
            pass  # refused operations change nothing, live or stored


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
def test_the_restored_state_is_the_live_state(
    operations: list[tuple[str, str, str]], logistic_model: Any
) -> None:
    onnx = load_model(logistic_model).onnx_bytes
    assert onnx is not None

    async def scenario(repository: Path) -> None:
        async with server(repository) as first:
            await apply(first, operations, onnx)
            live = snapshot(first)
        async with server(repository) as second:
            assert snapshot(second) == live

    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(scenario(Path(directory)))


async def test_a_failed_write_is_raised_as_store_error(
    tmp_path: Path, binary_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", binary_model)

        def full(self: ModelStore, record: object) -> None:
            raise OSError("no space left on device")

        monkeypatch.setattr(ModelStore, "save_model", full)
        with pytest.raises(StoreError, match="no space"):
            await first.set_routing(MODEL, RoutingConfig())
        monkeypatch.undo()
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {MODEL: "v1"}


async def test_a_state_that_names_a_version_whose_write_failed_is_not_stored(
    tmp_path: Path, binary_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stored_active() -> str:
        return str(json.loads((tmp_path / MODEL / "model.json").read_bytes())["active"])

    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", binary_model)

        def full(self: ModelStore, record: object) -> None:
            raise OSError("no space left on device")

        monkeypatch.setattr(ModelStore, "save_version", full)
        with pytest.raises(StoreError, match="no space"):
            await first.deploy_model(MODEL, "v2", binary_model, set_active=True)
        monkeypatch.undo()
        assert first.active_models[MODEL] == "v2"  # in memory, as the error says
        assert stored_active() == "v1"  # never a version a restart would not find
        with pytest.raises(StoreError, match="v2 failed to be written"):
            await first.set_fallback(MODEL, Fallback(value=0.5))
        await first.deploy_model(MODEL, "v2", binary_model, replace=True)
        assert stored_active() == "v2"
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {MODEL: "v2"}
        assert second.get_fallback(MODEL) == Fallback(value=0.5)


async def test_a_stored_active_version_that_is_gone_gives_way_to_the_highest(
    tmp_path: Path, binary_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async with server(tmp_path) as first:
        for version in ("v9", "v10", "v2"):
            await first.deploy_model(MODEL, version, binary_model)
        await first.set_active_version(MODEL, "v2")
    (tmp_path / MODEL / "v2" / "model.onnx").write_bytes(b"changed")  # fails its checksum
    caplog.set_level(logging.WARNING, logger="turnout")
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {MODEL: "v10"}
    assert "stored active version games:v2 is gone; its highest version v10" in caplog.text
    async with server(tmp_path) as third:  # and that is what is stored now
        assert dict(third.active_models) == {MODEL: "v10"}


async def test_a_model_that_cannot_be_restored_stays_on_disk(
    tmp_path: Path, binary_model: Any
) -> None:
    async with server(tmp_path) as first:
        await first.deploy_model(
            MODEL, "v1", binary_model, breaker=BreakerConfig(policy="error_rate")
        )
    stored = tmp_path / MODEL / "v1" / "deployment.json"
    stored.write_text(stored.read_text().replace('"error_rate"', '"not-installed"'))
    async with server(tmp_path) as second:
        assert not second.get_all_models_status()
    assert (tmp_path / MODEL / "model.json").is_file()
    assert (tmp_path / MODEL / "v1" / "model.onnx").is_file()


# -- rollouts in progress ------------------------------------------------------------------


async def test_a_canary_in_progress_resumes_at_its_step_with_a_fresh_window(
    tmp_path: Path, binary_data: Any, logistic_model: Any, forest_model: Any
) -> None:
    rows = binary_data.X_test.to_numpy()[:1]
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "v1", logistic_model)
        await first.deploy_model(MODEL, "v2", forest_model)
        # Judged on errors only: a forest's p99 against a linear model's is the machine's
        # noise, not what this test is about.
        await first.start_canary(
            MODEL, "v2", steps=[0.1, 0.5, 1.0], min_requests=5, max_latency_ratio=1e6
        )
        for _ in range(20):  # requests pinned to either version count for the canary
            for version in ("v1", "v2"):
                await first.predict(MODEL, rows, version=version)
            if first.get_routing(MODEL).params["step"] == 1:
                break
        routing = first.get_routing(MODEL)
        assert routing.params["step"] == 1
    async with server(tmp_path) as second:
        assert second.get_routing(MODEL) == routing
        assert dict(second.active_models) == {MODEL: "v1"}
        (entry,) = second.rollout_history(MODEL)
        assert (entry.candidate, entry.step, entry.weight) == ("v2", 1, 0.5)
        assert (entry.event, entry.reason) == ("started", "restored")
        # The restored step is judged on requests served since the restart: all of them.
        for _ in range(4):
            await second.predict(MODEL, rows, version="v2")
        assert second.get_routing(MODEL).params["step"] == 1
        for _ in range(40):
            for version in ("v1", "v2"):
                await second.predict(MODEL, rows, version=version)
            if second.get_routing(MODEL).strategy == "active":
                break
        assert dict(second.active_models) == {MODEL: "v2"}
        assert [e.event for e in second.rollout_history(MODEL)][-1] == "promoted"


async def test_a_blue_green_switch_can_still_be_rolled_back_after_a_restart(
    tmp_path: Path, binary_data: Any, binary_model: Any, binary_model_v2: Any
) -> None:
    rows = binary_data.records(3)
    async with server(tmp_path) as first:
        await first.deploy_model(MODEL, "blue", binary_model)
        await first.deploy_model(MODEL, "green", binary_model_v2)
        expected = await first.predict(MODEL, rows, version="green")
        await first.blue_green_switch(MODEL, "green", samples=rows, expected=expected)
    async with server(tmp_path) as second:
        assert dict(second.active_models) == {MODEL: "green"}
        await second.blue_green_rollback(MODEL)
    async with server(tmp_path) as third:
        assert dict(third.active_models) == {MODEL: "blue"}
        assert third.get_routing(MODEL).params["live"] == "blue"


async def test_every_routing_strategy_and_a_value_fallback_survive_a_restart(
    tmp_path: Path, binary_model: Any, binary_model_v2: Any
) -> None:
    configs = {
        "weighted": {"versions": ["v1", "v2"], "weights": [0.2, 0.8]},
        "sticky": {"versions": ["v1", "v2"], "weights": [0.5, 0.5]},
        "shadow": {"primary": "v1", "mirrors": {"v2": 1.0}},
        "bandit": {"versions": ["v1", "v2"], "algorithm": "epsilon_greedy", "epsilon": 0.2},
    }
    async with server(tmp_path) as first:
        for model_id in configs:
            await first.deploy_model(model_id, "v1", binary_model)
            await first.deploy_model(model_id, "v2", binary_model_v2)
        for model_id, params in configs.items():
            await first.set_routing(model_id, RoutingConfig(model_id, params))
        await first.set_fallback("sticky", Fallback(value=[0.25, 0.75]))
        routing = {model_id: first.get_routing(model_id) for model_id in configs}
    async with server(tmp_path) as second:
        assert {model_id: second.get_routing(model_id) for model_id in configs} == routing
        assert second._fallbacks == {"sticky": Fallback(value=[0.25, 0.75])}


@pytest.mark.parametrize(
    "config",
    [
        BatchingConfig(),
        BatchingConfig(max_batch_rows=1, inline_batch_ms=0),
        BatchingConfig(timeout_ms=5),
    ],
)
def test_batching_is_stored_as_what_differs_from_the_defaults(config: BatchingConfig) -> None:
    from turnout.core.state.repository_records import batching_to_dict, deploy_keywords

    stored = batching_to_dict(config)

    # An older release, which knows fewer fields, restores what a newer one wrote
    # as long as the new fields were left alone.
    assert "inline_watchdog_ms" not in stored
    assert deploy_keywords({}, {"batching": json.loads(json.dumps(stored))})["batching"] == config
