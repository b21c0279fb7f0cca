"""``turnout serve --state redis://...``: two servers, one control state, a real Redis.

Two ``turnout serve`` processes on their own ports serve the demo from one
Redis. A routing change made through one's admin API is in force on the
other: the test measures how long that takes, over 20 changes.
"""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp

from services import RedisServer
from support import read_banner, turnout_serve

TOKEN = "state-test-token-0123456789"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
MODEL = "breast_cancer"


def admin_url(banner: list[str]) -> str:
    return banner[-1].strip().split()[-1].removesuffix("/admin/status")


async def routing(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(f"{url}/admin/models/{MODEL}/routing", headers=HEADERS) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_a_routing_change_on_one_server_is_in_force_on_the_other(
    redis_server: RedisServer,
) -> None:
    env = {"TURNOUT_ADMIN_TOKEN": TOKEN, "TURNOUT_STATE": redis_server.url}
    args = ("--demo", "--admin-port", "0")
    async with turnout_serve(*args, env=env) as one, turnout_serve(*args, env=env) as two:
        first = admin_url(await read_banner(one, "/admin/status"))
        second = admin_url(await read_banner(two, "/admin/status"))
        delays: list[float] = []
        async with aiohttp.ClientSession() as session:
            assert (await routing(session, second))["strategy"] == "weighted"
            for change in range(20):
                weights = [100 - change, change + 1]
                config = {
                    "strategy": "weighted",
                    "params": {"versions": ["v1", "v2"], "weights": weights},
                }
                started = time.perf_counter()
                async with session.put(
                    f"{first}/admin/models/{MODEL}/routing", json=config, headers=HEADERS
                ) as response:
                    assert response.status == 200, await response.text()
                while (await routing(session, second))["params"]["weights"] != weights:
                    assert time.perf_counter() - started < 1.0, f"change {change} took over 1 s"
                    await asyncio.sleep(0.001)
                delays.append(time.perf_counter() - started)
        delays.sort()
        worst = delays[-1] * 1e3
        assert worst < 1000, f"propagation p50 {delays[10] * 1e3:.1f} ms, max {worst:.1f} ms"
        for process in (one, two):
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
            assert process.stderr is not None
            assert "Traceback" not in (await process.stderr.read()).decode()


async def test_an_unknown_state_location_is_refused_at_start() -> None:
    async with turnout_serve("--no-demo", "--state", "mongodb://x") as process:
        assert await asyncio.wait_for(process.wait(), 15) == 1
        assert process.stderr is not None
        errors = (await process.stderr.read()).decode()
    assert "unknown control state 'mongodb://x'" in errors
