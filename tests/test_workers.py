"""``turnout serve --workers N``: real worker processes on one loopback port.

The supervisor starts the workers; the demo trained in worker 0 is loaded by
the others from the shared artifacts. Each scenario reports its figure in
its assertion message. Requests go over fresh connections, so that the
kernel's SO_REUSEPORT hashing spreads them over the workers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from support import read_banner, turnout_serve

TOKEN = "workers-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "breast_cancer"
WORKERS = 2


@dataclass
class Fleet:
    """A running ``turnout serve --workers N`` and its two URLs."""

    process: asyncio.subprocess.Process
    url: str
    admin: str


async def fresh(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    """One request over a new connection; return its status and JSON body."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.request(method, url, **kwargs) as response,
    ):
        return response.status, await response.json()


async def worker_pids(fleet: Fleet, want: int, seconds: float = 20.0) -> set[int]:
    """The pids answering the admin API, until ``want`` of them are ready and seen."""
    seen: set[int] = set()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status, body = await fresh("GET", f"{fleet.admin}/admin/status", headers=HEADERS)
        ready, _ = await fresh("GET", f"{fleet.url}/v2/health/ready")
        if status == 200 and ready == 200 and MODEL in body["models"]:
            seen.add(body["pid"])
            if len(seen) >= want:
                return seen
    raise AssertionError(f"saw {len(seen)} of {want} ready workers in {seconds} s")


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    env = {"TURNOUT_ADMIN_TOKEN": TOKEN}
    args = ("--demo", "--workers", str(WORKERS), "--admin-port", "0")
    async with turnout_serve(*args, env=env) as process:
        banner = await read_banner(process, "/admin/status")
        url = banner[0].split()[4]
        admin = banner[-1].strip().split()[-1].removesuffix("/admin/status")
        fleet = Fleet(process, url, admin)
        await worker_pids(fleet, WORKERS)
        yield fleet
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)


async def test_every_worker_serves_the_demo_and_a_routing_change_reaches_all(
    fleet: Fleet,
) -> None:
    row = [0.5] * 30
    body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}]}
    statuses = [
        (await fresh("POST", f"{fleet.url}/v2/models/{MODEL}/infer", json=body))[0]
        for _ in range(40)
    ]
    assert statuses == [200] * 40

    delays: list[float] = []
    for change in range(10):
        weights = [90 - change, 10 + change]
        config = {"strategy": "weighted", "params": {"versions": ["v1", "v2"], "weights": weights}}
        started = time.perf_counter()
        status, answer = await fresh(
            "PUT", f"{fleet.admin}/admin/models/{MODEL}/routing", json=config, headers=HEADERS
        )
        assert status == 200, answer
        # In force on every worker: each of 8 fresh connections in a row sees it.
        in_a_row = 0
        while in_a_row < 8:
            _, model = await fresh("GET", f"{fleet.admin}/admin/models/{MODEL}", headers=HEADERS)
            in_a_row = in_a_row + 1 if model["routing"]["params"]["weights"] == weights else 0
            assert time.perf_counter() - started < 1.0, f"change {change} not everywhere in 1 s"
        delays.append(time.perf_counter() - started)
    slowest = max(delays) * 1e3
    assert slowest < 1000, f"slowest change in force on all workers after {slowest:.0f} ms"


async def test_the_admin_api_lists_every_worker(fleet: Fleet) -> None:
    pids = await worker_pids(fleet, WORKERS)
    for _ in range(50):  # each worker beats once a second: wait for one after loading
        status, body = await fresh("GET", f"{fleet.admin}/admin/fleet", headers=HEADERS)
        assert status == 200, body
        beats = body["processes"].values()
        if len(beats) == WORKERS and all(MODEL in facts["models"] for facts in beats):
            break
        await asyncio.sleep(0.1)
    listed = {facts["pid"] for facts in body["processes"].values()}
    assert listed == pids
    assert sum(facts["leads"] for facts in body["processes"].values()) == 1
    for facts in body["processes"].values():
        assert facts["models"][MODEL]["loaded"] == ["v1", "v2"]
        assert facts["unloaded"] == []

    # turnout status lists them too, a line per worker.
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turnout", "status", "--server", fleet.admin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TURNOUT_ADMIN_TOKEN": TOKEN},
    )  # fmt: skip
    out, err = await asyncio.wait_for(status.communicate(), 60)
    assert status.returncode == 0, err.decode()
    text = out.decode()
    assert f"{WORKERS} servers share this control state:" in text
    for pid in pids:
        assert any(
            line.startswith(str(pid)) and f"{MODEL}:v1/v2" in line for line in text.splitlines()
        )


async def test_a_killed_worker_is_restarted_and_the_others_keep_serving(fleet: Fleet) -> None:
    pids = await worker_pids(fleet, WORKERS)
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    failures = 0
    for _ in range(30):  # the survivor answers meanwhile; the victim's port share moves to it
        status, _ = await fresh("GET", f"{fleet.url}/v2/models/{MODEL}")
        failures += status != 200
    assert failures == 0, f"{failures} of 30 requests failed while a worker was down"
    after = await worker_pids(fleet, WORKERS, seconds=30.0)
    assert victim not in after
    fleet.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(fleet.process.wait(), 30) == 0
    assert fleet.process.stderr is not None
    log = (await fleet.process.stderr.read()).decode()
    assert f"(pid {victim}) exited with signal SIGKILL; restarting it in 0.5 s" in log
    assert "Traceback" not in log


async def test_a_taken_port_is_refused_before_any_worker_starts() -> None:
    async with turnout_serve("--workers", "2", "--no-demo") as first:
        banner = await read_banner(first, "No models are deployed")
        port = banner[0].split()[4].rsplit(":", 1)[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "turnout", "serve", "--workers", "2", "--port", port,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, errors = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 1
        assert "Address already in use" in errors.decode()
        assert "workers started" not in errors.decode()
        first.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(first.wait(), 30) == 0
