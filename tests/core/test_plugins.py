"""Plugins: routing strategies and event hooks, registered through pluggy when a server starts.

A plugin is any object or module with ``@turnout.hookimpl`` functions named
after a hook in ``turnout.core.hookspecs``; the built-in strategies register
the same way. Event hooks run on the event loop, and one that raises is
logged and skipped: it never fails a prediction or a deployment.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import re
import types
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

from support import eventually
from turnout import (
    InvalidRoutingError,
    ModelServer,
    PluginError,
    Route,
    RouteRequest,
    RoutingConfig,
    RoutingContext,
    RoutingStrategyFactory,
    hookimpl,
)
from turnout.core import hookspecs
from turnout.core.deployments.registry import Deployment
from turnout.core.execution.batching import BatchReport
from turnout.core.routing.config import check_versions
from turnout.core.service.plugins import DEFAULT_PLUGINS, collect_strategies, make_plugin_manager

BUILT_IN_STRATEGIES = {
    "active",
    "weighted",
    "sticky",
    "canary",
    "blue_green",
    "shadow",
    "bandit",
}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


# -- a third-party strategy, written as a plugin package would write it -------------------


class RoundRobinRouting:
    """Sends requests to ``versions`` in turn: ``{"versions": ["v1", "v2"]}``."""

    name: ClassVar[str] = "round_robin"

    def __init__(self, params: Mapping[str, Any], context: RoutingContext) -> None:
        if set(params) - {"versions"}:
            raise InvalidRoutingError(f"'round_robin' routing: unknown params {sorted(params)}")
        versions = check_versions(params.get("versions"), context)
        self._turns: Iterator[Route] = itertools.cycle([Route(v) for v in versions])
        self._versions = frozenset(versions)

    def route(self, request: RouteRequest) -> Route:
        return next(self._turns)

    def versions(self) -> frozenset[str]:
        return self._versions


def plugin_module(name: str, *strategies: type) -> types.ModuleType:
    """A plugin module called ``name`` that offers ``strategies``, as an entry point loads one."""
    module = types.ModuleType(name)

    @hookimpl
    def register_routing_strategies() -> Sequence[RoutingStrategyFactory]:
        return list(strategies)

    module.register_routing_strategies = register_routing_strategies  # type: ignore[attr-defined]
    return module


class Recorder:
    """A plugin implementing every event hook; it records each call's arguments."""

    def __init__(self) -> None:
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)

    @hookimpl
    def model_deployed(self, deployment: Deployment) -> None:
        self.calls["model_deployed"].append({"deployment": deployment})

    @hookimpl
    def model_retired(self, model_id: str, version: str) -> None:
        self.calls["model_retired"].append({"model_id": model_id, "version": version})

    @hookimpl
    def active_version_changed(self, model_id: str, old: str | None, new: str | None) -> None:
        self.calls["active_version_changed"].append({"model_id": model_id, "old": old, "new": new})

    @hookimpl
    def routing_changed(self, model_id: str, old: RoutingConfig, new: RoutingConfig) -> None:
        self.calls["routing_changed"].append({"model_id": model_id, "old": old, "new": new})

    @hookimpl
    def batch_completed(self, model_id: str, version: str, report: BatchReport) -> None:
        self.calls["batch_completed"].append(
            {"model_id": model_id, "version": version, "report": report}
        )

    @hookimpl
    def shadow_compared(
        self, model_id: str, primary: str, shadow: str, difference: float, agreed: bool | None
    ) -> None:
        self.calls["shadow_compared"].append(
            {
                "model_id": model_id,
                "primary": primary,
                "shadow": shadow,
                "difference": difference,
                "agreed": agreed,
            }
        )

    @hookimpl
    def rollout_step(
        self, model_id: str, candidate: str, step: int, weight: float, event: str
    ) -> None:
        self.calls["rollout_step"].append(
            {
                "model_id": model_id,
                "candidate": candidate,
                "step": step,
                "weight": weight,
                "event": event,
            }
        )


# -- registration ------------------------------------------------------------------------


def test_the_built_in_strategies_register_like_any_plugin():
    manager = make_plugin_manager(entry_points=False)

    assert set(collect_strategies(manager)) == BUILT_IN_STRATEGIES
    for name in DEFAULT_PLUGINS:
        assert manager.has_plugin(name)


def test_each_server_has_its_own_plugins():
    with_plugin = ModelServer(plugins=[plugin_module("rr", RoundRobinRouting)], entry_points=False)
    without = ModelServer(entry_points=False)

    assert with_plugin.plugin_manager is not without.plugin_manager
    assert with_plugin.plugin_manager.has_plugin("rr")
    assert not without.plugin_manager.has_plugin("rr")


async def test_a_plugin_strategy_can_route_a_model(binary_model, binary_model_v2, binary_data):
    rows = binary_data.records(1)
    plugin = plugin_module("acme_routing", RoundRobinRouting)

    async with ModelServer(plugins=[plugin], entry_points=False) as server:
        await server.deploy_model("bc", "v1", binary_model)
        await server.deploy_model("bc", "v2", binary_model_v2)
        await server.set_routing("bc", RoutingConfig("round_robin", {"versions": ["v1", "v2"]}))

        served = [(await server.infer("bc", rows)).version for _ in range(4)]

        assert served == ["v1", "v2", "v1", "v2"]
        with pytest.raises(InvalidRoutingError):
            await server.set_routing("bc", RoutingConfig("round_robin", {"versions": ["v9"]}))
        assert server.get_routing("bc").strategy == "round_robin"


async def test_a_strategy_no_plugin_offers_is_unknown(server, binary_model):
    await server.deploy_model("bc", "v1", binary_model)

    with pytest.raises(InvalidRoutingError, match="unknown routing strategy 'round_robin'"):
        await server.set_routing("bc", RoutingConfig("round_robin", {"versions": ["v1"]}))


def test_two_plugins_offering_one_strategy_name_fail_at_start_up_naming_both():
    acme = plugin_module("acme_routing", RoundRobinRouting)
    globex = plugin_module("globex_routing", RoundRobinRouting)

    with pytest.raises(PluginError, match="'round_robin'") as caught:
        ModelServer(plugins=[acme, globex], entry_points=False)

    assert "acme_routing" in str(caught.value)
    assert "globex_routing" in str(caught.value)


def test_a_plugin_cannot_take_over_a_built_in_strategy_name():
    class Impostor(RoundRobinRouting):
        name: ClassVar[str] = "weighted"

    with pytest.raises(PluginError, match=r"turnout\.strategies\.weighted") as caught:
        ModelServer(plugins=[plugin_module("impostor", Impostor)], entry_points=False)
    assert "impostor" in str(caught.value)


def test_a_strategy_without_a_name_fails_at_start_up():
    class Nameless:
        pass

    with pytest.raises(PluginError, match="no name"):
        ModelServer(plugins=[plugin_module("nameless", Nameless)], entry_points=False)


def test_a_misspelled_hook_fails_at_start_up():
    class Typo:
        @hookimpl
        def model_deploy(self, deployment: Deployment) -> None:  # model_deployed
            pass

    with pytest.raises(PluginError, match="model_deploy"):
        ModelServer(plugins=[Typo()], entry_points=False)


def test_a_hook_taking_an_argument_the_hook_lacks_fails_at_start_up():
    class WrongArgument:
        @hookimpl
        def model_retired(self, model_id: str, revision: str) -> None:  # version
            pass

    with pytest.raises(PluginError, match="revision"):
        ModelServer(plugins=[WrongArgument()], entry_points=False)


# -- events ------------------------------------------------------------------------------


class Broken:
    """A plugin whose tracking server is down: every event hook raises."""

    @hookimpl
    def model_deployed(self, deployment: Deployment) -> None:
        raise ConnectionError("tracking server unreachable")

    @hookimpl
    def batch_completed(self, model_id: str, version: str, report: BatchReport) -> None:
        raise ConnectionError("tracking server unreachable")


async def test_a_failing_event_hook_is_logged_and_never_fails_a_prediction(
    caplog, binary_model, binary_data
):
    recorder = Recorder()
    caplog.set_level(logging.ERROR, logger="turnout.plugins")

    async with ModelServer(plugins=[Broken(), recorder], entry_points=False) as server:
        deployment = await server.deploy_model("bc", "v1", binary_model)
        predictions = await server.predict("bc", binary_data.X_test)

    assert deployment.version == "v1"
    assert len(predictions) == len(binary_data.X_test)
    failed = {
        record.getMessage()
        for record in caplog.records
        if record.name == "turnout.plugins" and record.exc_info is not None
    }
    assert any("model_deployed" in message for message in failed)
    assert any("batch_completed" in message for message in failed)
    # The other plugin still heard about both.
    assert len(recorder.calls["model_deployed"]) == 1
    assert len(recorder.calls["batch_completed"]) >= 1


async def test_batch_completed_is_called_once_per_batch_not_per_request(binary_model, binary_data):
    recorder = Recorder()
    rows = binary_data.records(1)

    async with ModelServer(plugins=[recorder], entry_points=False) as server:
        await server.deploy_model("bc", "v1", binary_model)
        await asyncio.gather(*(server.predict("bc", rows) for _ in range(40)))
        batches = server.get_deployment("bc", "v1").metrics.snapshot().batches

    reports = [call["report"] for call in recorder.calls["batch_completed"]]
    assert len(reports) == batches < 40
    assert sum(report.requests for report in reports) == 40
    assert sum(report.rows for report in reports) == 40
    assert {(c["model_id"], c["version"]) for c in recorder.calls["batch_completed"]} == {
        ("bc", "v1")
    }


async def test_event_hooks_receive_the_documented_arguments(
    binary_model, binary_model_v2, binary_data
):
    recorder = Recorder()
    calls = recorder.calls
    rows = binary_data.records(2)
    shadow = RoutingConfig("shadow", {"primary": "v1", "mirrors": {"v2": 1.0}})

    async with ModelServer(plugins=[recorder], entry_points=False) as server:
        v1 = await server.deploy_model("bc", "v1", binary_model)
        v2 = await server.deploy_model("bc", "v2", binary_model_v2)
        assert calls["model_deployed"] == [{"deployment": v1}, {"deployment": v2}]
        assert calls["active_version_changed"] == [{"model_id": "bc", "old": None, "new": "v1"}]

        await server.set_routing("bc", shadow)
        assert calls["routing_changed"] == [
            {"model_id": "bc", "old": RoutingConfig("active"), "new": shadow}
        ]

        await server.predict("bc", rows)
        await eventually(lambda: bool(calls["shadow_compared"]), seconds=5.0)
        (compared,) = calls["shadow_compared"]
        assert compared["model_id"] == "bc"
        assert (compared["primary"], compared["shadow"]) == ("v1", "v2")
        assert isinstance(compared["difference"], float)
        assert compared["difference"] >= 0.0
        assert isinstance(compared["agreed"], bool)  # a classifier: labels are compared
        await eventually(
            lambda: {c["version"] for c in calls["batch_completed"]} == {"v1", "v2"}, seconds=5.0
        )
        report = calls["batch_completed"][0]["report"]
        assert isinstance(report, BatchReport)
        assert (report.rows, report.requests, report.error) == (2, 1, None)
        assert len(report.latencies) == report.requests

        # A canary of two steps that passes each on one request: started, step, promoted.
        await server.start_canary(
            "bc", "v2", steps=[0.5, 1.0], min_requests=1, max_latency_ratio=1e6
        )
        for _ in range(200):
            if server.get_routing("bc").strategy != "canary":
                break
            await server.predict("bc", rows)
        assert [(c["event"], c["step"], c["weight"]) for c in calls["rollout_step"]] == [
            ("started", 0, 0.5),
            ("step", 1, 1.0),
            ("promoted", 1, 1.0),
        ]
        assert {(c["model_id"], c["candidate"]) for c in calls["rollout_step"]} == {("bc", "v2")}
        assert calls["active_version_changed"][-1] == {"model_id": "bc", "old": "v1", "new": "v2"}
        assert calls["routing_changed"][-1]["new"] == RoutingConfig("active")

        await server.retire_model("bc", "v1")
        assert calls["model_retired"] == [{"model_id": "bc", "version": "v1"}]


async def test_an_aborted_canary_reports_a_rollback_with_no_traffic(binary_model, binary_model_v2):
    recorder = Recorder()

    async with ModelServer(plugins=[recorder], entry_points=False) as server:
        await server.deploy_model("bc", "v1", binary_model)
        await server.deploy_model("bc", "v2", binary_model_v2)
        await server.start_canary("bc", "v2", steps=[0.25, 1.0])
        await server.abort_canary("bc")

        assert server.active_models["bc"] == "v1"

    assert [(c["event"], c["weight"]) for c in recorder.calls["rollout_step"]] == [
        ("started", 0.25),
        ("rolled_back", 0.0),
    ]


# -- the hooks are documented ------------------------------------------------------------


def test_every_hook_spec_is_registered():
    manager = make_plugin_manager(entry_points=False)
    specified = {name for name, caller in vars(manager.hook).items() if caller.spec is not None}

    assert set(hookspecs.all_hook_names()) == specified


@pytest.mark.parametrize("hook", hookspecs.all_hook_names())
def test_every_hook_has_a_docstring(hook):
    doc = inspect.getdoc(getattr(hookspecs, hook))

    assert doc, f"hook {hook} has no docstring"


@pytest.mark.parametrize("hook", hookspecs.all_hook_names())
def test_every_hook_is_documented_in_docs_plugins_md(hook):
    assert DOCS.is_file(), "docs/plugins.md is missing: it must document every hook"

    assert re.search(rf"\b{hook}\b", DOCS.read_text(encoding="utf-8")), (
        f"docs/plugins.md does not mention the {hook} hook"
    )
