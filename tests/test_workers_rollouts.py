"""Canary rollouts on ``turnout serve --workers N``: the issue scenarios, on real processes.

One worker of a fleet holds the controller lease and alone steps canaries
(``core/service/controller_lease.py``); these scenarios kill it, stop the
Redis the fleet shares, and stop the supervisor under load, over loopback.
Then the supervisor's back-off, with a worker that exits at once, and the
readiness of a server still loading a version its fleet routes to (two
servers in this process, one load held). Each states its figure in its
assertion message. The helpers that start a fleet and talk to it are in
``support.py``, shared with ``test_workers.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services import RedisServer
from support import (
    HEADERS,
    MODEL,
    Fleet,
    eventually,
    fresh,
    listed,
    loaded_on,
    serving,
    sharing,
    steady_load,
)
from turnout import MemoryState, ModelServer, RoutingConfig
from turnout.core.service.control_sync import version_entry
from turnout.core.service.controller_lease import LEASE_SECONDS
from turnout.core.state.artifacts import ArtifactStore
from turnout.supervisor import (
    FIRST_BACKOFF,
    HEALTHY_SECONDS,
    MAX_BACKOFF,
    Supervisor,
    restart_delay,
)
from turnout.web.app import create_app

WORKERS = 2
# The demo's v2 rolled out over v1 in three short steps. Both versions answer the same
# rows in the same time, so only latency noise on a busy machine could fail a step: the
# latency bound is loose, and a rollback would still be a valid, single, ending.
STEP_SECONDS = 2.0
CANARY = {
    "candidate": "v2",
    "baseline": "v1",
    "steps": [0.25, 0.5, 1.0],
    "min_requests": 20,
    "min_seconds": STEP_SECONDS,
    "max_latency_ratio": 100.0,
}
ENDINGS = ("promoted", "rolled_back")
SPLIT = RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [70, 30]})

Events = list[dict[str, Any]]


async def admin_get(fleet: Fleet, path: str) -> Any:
    """GET an admin path from whichever worker answers, retrying a connection a kill cut."""
    for _ in range(50):
        try:
            status, body = await fresh("GET", f"{fleet.admin}{path}", headers=HEADERS)
        except aiohttp.ClientError:
            await asyncio.sleep(0.05)
            continue
        assert status == 200, (path, status, body)
        return body
    raise AssertionError(f"GET {path}: every connection was cut")


async def rollouts(fleet: Fleet) -> Events:
    """The demo model's rollout history, oldest first, as one worker answers it."""
    return (await admin_get(fleet, f"/admin/models/{MODEL}/rollouts"))["events"]  # type: ignore[no-any-return]


async def history_until(
    fleet: Fleet, holds: Callable[[Events], bool], seconds: float = 30.0
) -> Events:
    """Poll the rollout history every 0.1 s until ``holds(events)``; return those events."""
    deadline = time.monotonic() + seconds
    while not holds(events := await rollouts(fleet)):
        assert time.monotonic() < deadline, f"history never settled in {seconds} s: {brief(events)}"
        await asyncio.sleep(0.1)
    return events


def brief(events: Events) -> list[str]:
    """The history in short, for messages: ``event@step`` for each entry."""
    return [f"{event['event']}@{event['step']}" for event in events]


def endings(events: Events) -> Events:
    """The entries that end a canary: its promotion or its rollback."""
    return [event for event in events if event["event"] in ENDINGS]


def recorded_at(event: dict[str, Any]) -> float:
    """When the entry was recorded, as ``time.time()`` seconds."""
    return datetime.fromisoformat(event["at"]).astimezone(UTC).timestamp()


async def start_canary(fleet: Fleet) -> None:
    """Start the CANARY rollout through the admin API."""
    url = f"{fleet.admin}/admin/models/{MODEL}/canary"
    status, body = await fresh("POST", url, json=CANARY, headers=HEADERS)
    assert status == 201, body


async def leader(fleet: Fleet, besides: int = 0, seconds: float = 10.0) -> int:
    """The pid that ``GET /admin/fleet`` lists as leading, other than ``besides``."""

    def led(by_pid: dict[int, Any]) -> bool:
        return [pid for pid, facts in by_pid.items() if facts["leads"] and pid != besides] != []

    while True:
        try:
            by_pid = await listed(fleet, led, seconds)
        except aiohttp.ClientError:  # a connection the killed worker held
            continue
        return next(pid for pid, facts in by_pid.items() if facts["leads"] and pid != besides)


# -- 1. the leader killed in the middle of a canary ----------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_a_canary_resumes_on_another_worker_when_its_leader_is_killed(
    store: str, request: pytest.FixtureRequest
) -> None:
    state = () if store == "sqlite" else ("--state", request.getfixturevalue("own_redis").url)
    async with serving(WORKERS, *state) as fleet, steady_load(fleet) as answers:
        await listed(fleet, loaded_on(fleet.pids))
        first = await leader(fleet)
        await start_canary(fleet)
        before = await history_until(fleet, lambda events: brief(events)[-1:] == ["step@1"])

        os.kill(first, signal.SIGKILL)
        killed, killed_at = time.monotonic(), time.time()
        second = await leader(fleet, besides=first, seconds=4 * LEASE_SECONDS)
        took = time.monotonic() - killed
        events = await history_until(fleet, lambda events: endings(events) != [])
        # And it stays ended: no worker decides it again (the restarted one included).
        await asyncio.sleep(2 * STEP_SECONDS)
        events = await rollouts(fleet)
        after = [event for event in events if recorded_at(event) > killed_at]

    figures = (
        f"leader {first} killed at step 1 ({brief(before)}); {second} led {took:.1f} s later;"
        f" history {brief(events)}, {len(after)} entries after the kill;"
        f" {sum(status == 200 for _, status in answers)} of {len(answers)} inferences answered 200"
    )
    # Within two leases, even as /admin/fleet tells it: up to a heartbeat late.
    assert took < 2 * LEASE_SECONDS, figures
    # From the stored step: the entries after the kill go on from step 1, none starts over.
    assert [event["event"] for event in events].count("started") == 1, figures
    assert after != [], figures
    assert all(event["step"] >= 1 for event in after), figures
    steps = [event["step"] for event in events]
    assert steps == sorted(steps), figures
    # Exactly one ending, and the last entry: never both, never twice.
    assert len(endings(events)) == 1, figures
    assert events[-1]["event"] in ENDINGS, figures


# -- 2. SIGTERM to the supervisor under load ------------------------------------------------------

# How steady_load's requests that got no answer fail when they never reached a worker's
# handler: the connection refused, or reset before the request was sent or read.
NEVER_ADMITTED = {"ClientConnectorError", "ClientOSError"}


def kind(status: object) -> str:
    """An answer's status as a string, or the name of the exception a request raised."""
    return str(status).split("(")[0]


async def test_sigterm_drains_the_requests_in_flight_and_the_supervisor_exits_0() -> None:
    clients = 16
    async with serving(WORKERS) as fleet:
        async with steady_load(fleet, clients) as answers:
            await eventually(lambda: len(answers) >= 200)  # every client has requests in flight
            fleet.process.send_signal(signal.SIGTERM)
            signalled = time.perf_counter()
            code = await asyncio.wait_for(fleet.process.wait(), 20)
            exited = time.perf_counter() - signalled
        assert fleet.process.stderr is not None
        log = (await fleet.process.stderr.read()).decode()
    kinds = Counter(kind(status) for _, status in answers)
    answered_after = sum(status == 200 and when > signalled for when, status in answers)
    figures = (
        f"supervisor exited {code} {exited:.2f} s after SIGTERM; of {len(answers)} requests"
        f" from {clients} clients: {dict(kinds)}; {answered_after} answered 200 after the SIGTERM"
    )
    # Every request a worker admitted was answered, and answered 200; the rest never reached
    # a worker: refused once the listeners closed, or cut in the accept queue of a closing
    # listener, which the kernel resets (SO_REUSEPORT gives it to no other socket). A
    # request dropped after it was sent would be a ServerDisconnectedError, or a
    # TimeoutError: a connection accepted as the listeners closed used to wait out the
    # shutdown, its request ignored (see ACCEPTED_GRACE_SECONDS in turnout.web.serve).
    assert set(kinds) <= {"200", *NEVER_ADMITTED}, figures
    assert answered_after > 0, figures
    assert code == 0, figures
    assert exited < 5.0, figures
    assert "stopping 2 workers; each answers the requests it admitted" in log, log
    assert "Traceback" not in log, log


# -- 3. a Redis outage in the middle of a canary ----------------------------------------------

# What the leader logs when a decision it made as the outage began was not stored.
UNDONE = "a change the control state did not take is undone"


async def test_a_canary_pauses_while_redis_is_down_and_ends_once_after(
    own_redis: RedisServer,
) -> None:
    outage = STEP_SECONDS + 3.0  # a step's window fills, and passes, while Redis is down
    async with sharing(own_redis, WORKERS) as fleet, steady_load(fleet, each=20_000) as answers:
        await start_canary(fleet)
        before = await history_until(fleet, lambda events: brief(events)[-1:] == ["step@2"])
        # Just before the last step's window fills: the leader has not heard of the outage
        # yet (its lease is renewed every LEASE_SECONDS / 3), and would promote.
        await asyncio.sleep(max(0.0, recorded_at(before[-1]) + STEP_SECONDS - 0.3 - time.time()))
        own_redis.stop()  # without persistence: it comes back empty
        down = time.time()
        await asyncio.sleep(outage)
        own_redis.start()
        up = time.time()
        events = await history_until(fleet, lambda events: endings(events) != [])
        await asyncio.sleep(2 * STEP_SECONDS)  # and it stays ended
        events = await rollouts(fleet)
    assert fleet.process.stderr is not None
    log = (await fleet.process.stderr.read()).decode()
    during = [event for event in events if down <= recorded_at(event) <= up]
    resumed = min(
        (recorded_at(event) - up for event in events if recorded_at(event) > up), default=-1
    )
    figures = (
        f"Redis down {up - down:.1f} s at {brief(before)}; entries recorded during it:"
        f" {brief(during)}; history after {brief(events)}, the first entry after the outage"
        f" {resumed:.1f} s after Redis returned; {sum(status == 200 for _, status in answers)} of"
        f" {len(answers)} inferences answered 200; {log.count(UNDONE)} decisions undone"
    )
    assert during == [], figures
    assert len(endings(events)) == 1, figures
    assert events[-1]["event"] in ENDINGS, figures
    assert "Traceback" not in log, log


# -- 4. a worker that keeps dying ---------------------------------------------------------------


def test_the_restart_delay_doubles_to_30_s_and_starts_over_after_a_healthy_minute() -> None:
    delays, backoff = [], FIRST_BACKOFF
    for _ in range(9):  # a worker that dies at once, nine times
        delay, backoff = restart_delay(backoff, ran=0.2)
        delays.append(delay)
    assert delays == [0.5, 1, 2, 4, 8, 16, MAX_BACKOFF, MAX_BACKOFF, MAX_BACKOFF], delays
    # Once it has run a minute, its next death is restarted as promptly as its first.
    assert restart_delay(backoff, ran=HEALTHY_SECONDS) == (FIRST_BACKOFF, 2 * FIRST_BACKOFF)


def test_the_supervisor_restarts_a_worker_that_keeps_dying_later_each_time() -> None:
    # A real supervisor (in this process) and a worker that exits at once, every time.
    lines: list[tuple[float, str]] = []

    def log(line: str) -> None:
        lines.append((time.monotonic(), line))
        if line.endswith("restarting it in 2 s"):  # the third death: enough
            os.kill(os.getpid(), signal.SIGTERM)  # to the supervisor's own handler

    dying = [sys.executable, "-c", "raise SystemExit(3)"]
    supervisor = Supervisor(1, lambda index: dying, shutdown_timeout=1.0, log=log)
    started = time.monotonic()
    assert supervisor.run() == 0
    took = time.monotonic() - started

    said = [line for _, line in lines]
    deaths = [when for when, line in lines if "exited with code 3" in line]
    restarts = [when for when, line in lines if "restarted (pid" in line]
    waits = [restart - death for death, restart in zip(deaths, restarts, strict=False)]
    figures = (
        f"{len(deaths)} deaths in {took:.1f} s, restarted after"
        f" {[f'{wait:.2f} s' for wait in waits]}: {said}"
    )
    assert [line.split("; ")[-1] for line in said if "exited" in line] == [
        "restarting it in 0.5 s",
        "restarting it in 1 s",
        "restarting it in 2 s",
    ], figures
    # Each wait is the delay said, to within the supervisor's poll (0.1 s) and a busy machine.
    assert len(waits) == 2, figures
    for wait, said_delay in zip(waits, (0.5, 1.0), strict=True):
        assert said_delay <= wait < said_delay + 0.5, figures
    assert said[-1] == "stopping 0 workers; each answers the requests it admitted", figures


# -- 5. readiness while a worker loads what its fleet routes to ----------------------------------


async def test_a_server_is_not_ready_while_it_loads_a_version_the_fleet_routes_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logistic_model: Any, forest_model: Any
) -> None:
    # Two servers sharing a control state and artifacts stand for two workers; the second
    # loads what the first deploys, and its load of v2 is held until released.
    held, release = threading.Event(), threading.Event()
    digests: dict[str, str] = {}  # of the versions whose load is held
    load = ArtifactStore.get

    def held_load(store: ArtifactStore, digest: str) -> bytes:
        if digests.get("v2") == digest:
            held.set()
            release.wait(30)
        return load(store, digest)

    monkeypatch.setattr(ArtifactStore, "get", held_load)
    shared, artifacts = MemoryState(), tmp_path / "artifacts"
    async with (
        ModelServer(state=shared, artifacts=artifacts, entry_points=False) as one,
        ModelServer(state=shared, artifacts=artifacts, entry_points=False) as two,
        TestClient(TestServer(create_app(two))) as http,
    ):

        async def ready() -> int:
            return (await http.get("/v2/health/ready")).status

        try:
            await one.deploy_model("bc", "v1", logistic_model)
            await eventually(lambda: "bc" in two.active_models)
            assert await ready() == 200  # it serves all there is

            deployment = await one.deploy_model("bc", "v2", forest_model, set_active=False)
            digests["v2"] = version_entry(deployment).digest
            await one.set_routing("bc", SPLIT)
            await eventually(held.is_set)
            statuses = [await ready()]  # v2 is catalogued and routed to, not loaded here
            release.set()
            await eventually(lambda: not two.unloaded_versions)
            statuses.append(await ready())
        finally:
            release.set()
    assert statuses == [503, 200], f"ready while v2 loaded, then once loaded: {statuses}"
