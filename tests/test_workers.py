"""``turnout serve --workers N``: real worker processes on one loopback port.

The supervisor starts the workers; the demo trained in worker 0 is loaded by
the others from the shared artifacts. Each scenario reports its figure in
its assertion message. Requests go over fresh connections, so that the
kernel's SO_REUSEPORT hashing spreads them over the workers.

The last scenarios run the workers on a real Redis of their own
(``--state redis://...``): 100 routing changes timed to every one of 4
workers, and a 5 s Redis outage under inference load.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services import RedisServer
from support import (
    HEADERS,
    INFER,
    MODEL,
    TOKEN,
    Fleet,
    eventually,
    fresh,
    infer,
    listed,
    loaded_on,
    read_banner,
    serving,
    sharing,
    steady_load,
    turnout_serve,
    worker_pids,
)
from turnout import RoutingConfig
from turnout.core.state.redis_state import RedisState

WORKERS = 2


@pytest.fixture
async def fleet() -> AsyncIterator[Fleet]:
    async with serving(WORKERS) as fleet:
        yield fleet


async def everywhere(fleet: Fleet, routing: dict[str, Any], since: float) -> None:
    """Wait until ``routing`` is in force on every worker: 8 fresh connections in a row see it.

    AssertionError if that takes more than a second from ``since`` (``time.perf_counter``).
    """
    in_a_row = 0
    while in_a_row < 8:
        _, model = await fresh("GET", f"{fleet.admin}/admin/models/{MODEL}", headers=HEADERS)
        in_a_row = in_a_row + 1 if model["routing"] == routing else 0
        assert time.perf_counter() - since < 1.0, f"{routing} not in force everywhere in 1 s"


async def test_every_worker_serves_the_demo_and_a_routing_change_reaches_all(
    fleet: Fleet,
) -> None:
    statuses = [(await infer(fleet))[0] for _ in range(40)]
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
        await everywhere(fleet, config, started)
        delays.append(time.perf_counter() - started)
    slowest = max(delays) * 1e3
    assert slowest < 1000, f"slowest change in force on all workers after {slowest:.0f} ms"


async def test_a_restarted_worker_answers_only_once_it_serves_what_the_fleet_routes_to(
    fleet: Fleet,
) -> None:
    victim = min(fleet.pids)
    os.kill(victim, signal.SIGKILL)
    answers: list[int] = []
    cut = 0  # connections the killed worker had accepted, or queued, die with it
    replaced = asyncio.Event()

    async def load() -> None:
        nonlocal cut
        while not replaced.is_set():
            try:
                answers.append((await infer(fleet))[0])
            except aiohttp.ClientError:
                cut += 1

    async def watch() -> None:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                _, body = await fresh("GET", f"{fleet.admin}/admin/status", headers=HEADERS)
                if body["pid"] not in fleet.pids:
                    await asyncio.sleep(1.0)  # and a while of traffic on the new worker
                    break
        replaced.set()

    await asyncio.gather(watch(), *(load() for _ in range(4)))
    wrong = len(answers) - answers.count(200)
    assert wrong == 0, f"{wrong} of {len(answers)} answers were not 200: {set(answers)}"
    assert cut < 20, f"{cut} connections cut by the kill"


async def test_a_sticky_key_gets_one_version_from_every_worker(fleet: Fleet) -> None:
    config = {"strategy": "sticky", "params": {"versions": ["v1", "v2"], "weights": [50, 50]}}
    started = time.perf_counter()
    status, answer = await fresh(
        "PUT", f"{fleet.admin}/admin/models/{MODEL}/routing", json=config, headers=HEADERS
    )
    assert status == 200, answer
    await everywhere(fleet, answer, started)
    versions: dict[str, set[str]] = {}
    for key, _ in itertools.product([f"user-{i}" for i in range(8)], range(10)):
        body = {**INFER, "parameters": {"key": key}}
        status, answer = await fresh("POST", f"{fleet.url}/v2/models/{MODEL}/infer", json=body)
        assert status == 200, answer
        versions.setdefault(key, set()).add(answer["model_version"])
    # Over fresh connections the kernel spreads the 10 requests of a key over both workers.
    assert all(len(seen) == 1 for seen in versions.values()), versions
    assert set().union(*versions.values()) == {"v1", "v2"}, versions


async def test_the_admin_api_lists_every_worker(fleet: Fleet) -> None:
    pids = await worker_pids(fleet, WORKERS)
    # A worker may answer before it has loaded v2: wait for a beat from each after loading.
    by_pid = await listed(fleet, loaded_on(pids), seconds=5.0)
    assert sum(facts["leads"] for facts in by_pid.values()) == 1
    for facts in by_pid.values():
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
        revision = by_pid[pid]["models"][MODEL]["revision"]
        line = next((line for line in text.splitlines() if line.startswith(str(pid))), text)
        # pid, host, leader mark, versions loaded, revision applied, last heartbeat
        assert f"{MODEL}:v1/v2" in line, line
        assert re.search(rf"{MODEL}@{revision}\b", line), (revision, line)
        assert re.search(r"\d+\.\d s ago$", line.strip()), line


async def scraped_requests(fleet: Fleet) -> dict[str, float]:
    """``turnout_requests_total`` of the demo's versions per worker, from one scrape."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"{fleet.url}/metrics") as response,
    ):
        text = await response.text()
    per_worker: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "turnout_requests_total" and sample.labels["model"] == MODEL:
                worker = sample.labels["worker"]
                per_worker[worker] = per_worker.get(worker, 0.0) + sample.value
    return per_worker


async def test_one_scrape_counts_the_requests_every_worker_served(fleet: Fleet) -> None:
    await asyncio.sleep(1.5)  # earlier requests published: the baseline is settled
    before = sum((await scraped_requests(fleet)).values())
    sent = 40
    for _ in range(sent):
        status, _ = await infer(fleet)
        assert status == 200
    deadline = time.monotonic() + 5.0
    while True:
        per_worker = await scraped_requests(fleet)
        counted = sum(per_worker.values()) - before
        if counted == sent or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert counted == sent, f"one scrape counted {counted} of {sent} requests: {per_worker}"
    assert len(per_worker) >= WORKERS, f"series of {sorted(per_worker)} only"


async def test_a_killed_worker_is_restarted_and_the_others_keep_serving(fleet: Fleet) -> None:
    pids = await worker_pids(fleet, WORKERS)
    victim = min(pids)
    clients = 4
    async with steady_load(fleet, clients) as answers:
        await eventually(lambda: len(answers) >= 100)  # the load is steady before the kill
        os.kill(victim, signal.SIGKILL)
        killed = time.perf_counter()
        await eventually(lambda: len(answers) >= 300 and answers[-1][0] > killed + 1.0, 30.0)
    failed = [(when - killed, status) for when, status in answers if status != 200]
    after_kill = sum(when >= killed for when, _ in answers)
    figures = (
        f"{len(failed)} of {len(answers)} inference requests failed, {after_kill} answered after"
        f" the SIGKILL; failures at {[f'{t * 1e3:.0f} ms' for t, _ in failed]}"
    )
    # Only what the victim held can fail: one request per client at most, all at the kill.
    assert len(failed) <= clients, figures
    assert all(abs(t) < 1.0 for t, _ in failed), figures
    assert after_kill >= 100, figures
    after = await worker_pids(fleet, WORKERS, seconds=30.0)
    assert victim not in after
    fleet.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(fleet.process.wait(), 30) == 0
    assert fleet.process.stderr is not None
    log = (await fleet.process.stderr.read()).decode()
    assert f"(pid {victim}) exited with signal SIGKILL; restarting it in 0.5 s" in log
    assert "Traceback" not in log


async def test_one_worker_writes_the_repository_and_another_takes_over_when_it_dies(
    tmp_path: Any,
) -> None:
    repository = tmp_path / "models"
    lock = repository / ".lock"

    def holder() -> int:
        with contextlib.suppress(OSError, ValueError):
            return int(lock.read_text().strip())
        return 0

    def stored_weights() -> list[int] | None:
        with contextlib.suppress(OSError, ValueError):
            model = json.loads((repository / MODEL / "model.json").read_text())
            return model["routing"]["params"].get("weights")  # type: ignore[no-any-return]
        return None

    async def route(weights: list[int]) -> None:
        config = {"strategy": "weighted", "params": {"versions": ["v1", "v2"], "weights": weights}}
        status, answer = await fresh(
            "PUT", f"{fleet.admin}/admin/models/{MODEL}/routing", json=config, headers=HEADERS
        )
        assert status == 200, answer

    async with serving(WORKERS, "--repository", str(repository)) as fleet:
        first = holder()
        assert first in fleet.pids
        await route([60, 40])
        await eventually(lambda: stored_weights() == [60, 40], 5.0)

        os.kill(first, signal.SIGKILL)
        await eventually(lambda: holder() not in (0, first), 5.0)
        await route([20, 80])  # written by the new holder, whichever worker took the change
        await eventually(lambda: stored_weights() == [20, 80], 5.0)


async def test_a_restarted_fleet_finds_its_shared_state_in_the_repository(
    tmp_path: Any,
) -> None:
    repository = tmp_path / "models"
    outcomes = f"/admin/models/{MODEL}/outcomes"
    async with serving(WORKERS, "--repository", str(repository)) as fleet:
        answered = [await infer(fleet) for _ in range(6)]
        feedback = [
            {"request_id": body["parameters"]["request_id"], "outcome": 1.0} for _, body in answered
        ]
        status, body = await fresh(
            "POST", fleet.admin + outcomes, json={"outcomes": feedback}, headers=HEADERS
        )
        assert status == 200, body
        served = {v: body["versions"].count(v) for v in ("v1", "v2")}

    shared = repository / ".turnout"
    assert (shared / "control-state.db").is_file()
    stored = sorted(path.name for path in (shared / "artifacts").iterdir())
    assert len(stored) == 2, f"artifacts kept in the repository: {stored}"

    async with serving(WORKERS, "--repository", str(repository)) as fleet:
        compare = f"{fleet.admin}/admin/models/{MODEL}/compare?a=v1&b=v2"
        status, body = await fresh("GET", compare, headers=HEADERS)
        assert status == 200, body
        counted = {"v1": body["a"]["count"], "v2": body["b"]["count"]}
        assert counted == served, f"outcomes after the restart {counted}, before {served}"
        # The ids answered before the restart keep their outcome: none is taken twice.
        status, body = await fresh(
            "POST", fleet.admin + outcomes, json={"outcomes": feedback[:1]}, headers=HEADERS
        )
        assert status == 400, body
        assert "already has an outcome" in body["error"]


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


# -- workers sharing a real Redis (--state redis://...) ------------------------------------------

# Concurrent /admin/status probes per round: enough for 4 workers to be hit in a round or two.
PROBES = 4


def weighted(weights: list[int]) -> dict[str, Any]:
    return {"strategy": "weighted", "params": {"versions": ["v1", "v2"], "weights": weights}}


async def put_routing(fleet: Fleet, weights: list[int]) -> tuple[int, Any]:
    url = f"{fleet.admin}/admin/models/{MODEL}/routing"
    return await fresh("PUT", url, json=weighted(weights), headers=HEADERS)


async def probe_status(fleet: Fleet) -> tuple[float, Any]:
    """GET /admin/status over a new connection; return when it was answered, and the body."""
    status, body = await fresh("GET", f"{fleet.admin}/admin/status", headers=HEADERS)
    assert status == 200, body
    return time.perf_counter(), body


async def in_force_everywhere(
    fleet: Fleet, pids: set[int], weights: list[int], since: float, seconds: float = 5.0
) -> float:
    """Seconds from ``since`` until every worker of ``pids`` has answered with ``weights``.

    Fresh connections to /admin/status, which says which worker answered, reach
    the workers as the kernel spreads them; a worker counts from its first answer
    with the change in force. That is an upper bound on when it took effect there:
    the probe before it may have gone to another worker.
    """
    seen: dict[int, float] = {}
    while len(seen) < len(pids):
        missing = sorted(pids - set(seen))
        assert time.perf_counter() - since < seconds, f"{missing} lack {weights} after {seconds} s"
        for answered, body in await asyncio.gather(*(probe_status(fleet) for _ in range(PROBES))):
            assert body["pid"] in pids, f"worker {body['pid']} is new: one of {pids} restarted"
            if body["models"][MODEL]["routing"]["params"].get("weights") == weights:
                seen.setdefault(body["pid"], answered - since)
    return max(seen.values())


async def test_each_of_100_routing_changes_is_in_force_on_4_workers_within_1_s(
    own_redis: RedisServer,
) -> None:
    workers = 4
    async with sharing(own_redis, workers) as fleet:
        pids = fleet.pids
        before = await listed(fleet, loaded_on(pids))
        first = max(facts["models"][MODEL]["revision"] for facts in before.values())
        delays: list[float] = []
        for change in range(100):
            weights = [100 - change, change + 1]
            started = time.perf_counter()
            status, answer = await put_routing(fleet, weights)
            assert status == 200, answer
            delays.append(await in_force_everywhere(fleet, pids, weights, started))
        delays.sort()
        p50, p99, worst = (delays[rank] * 1e3 for rank in (49, 98, 99))
        figures = f"PUT to in force on all {workers} workers, 100 changes:"
        figures += f" p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms"
        assert worst < 1000, figures

        # Cross-check from the heartbeats: every worker holds one revision, 100 writes on.
        def caught_up(by_pid: dict[int, Any]) -> bool:
            revisions = {facts["models"][MODEL]["revision"] for facts in by_pid.values()}
            return loaded_on(pids)(by_pid) and len(revisions) == 1 and min(revisions) >= first + 100

        await listed(fleet, caught_up, seconds=5.0)


async def test_4_workers_share_the_embedded_state_with_no_service_to_run() -> None:
    # No --state: the workers share a SQLite file of their own (WAL, data_version polls).
    workers = 4
    async with serving(workers) as fleet:
        pids = fleet.pids
        await listed(fleet, loaded_on(pids))
        delays: list[float] = []
        for change in range(20):
            weights = [90 - 4 * change, 10 + 4 * change]
            started = time.perf_counter()
            status, answer = await put_routing(fleet, weights)
            assert status == 200, answer
            delays.append(await in_force_everywhere(fleet, pids, weights, started))
    delays.sort()
    figures = (
        f"PUT to in force on all {workers} workers sharing SQLite, 20 changes:"
        f" p50 {delays[9] * 1e3:.1f} ms, max {delays[-1] * 1e3:.1f} ms"
    )
    assert len(pids) == workers, figures
    assert delays[-1] < 1.0, figures


async def stored_again(url: str, weights: list[int], seconds: float = 10.0) -> float:
    """Seconds until the Redis at ``url`` holds the demo's versions under ``weights`` again."""
    state = RedisState(url)
    started = time.perf_counter()
    try:
        while True:
            stored = await state.read(MODEL)
            if set(stored.versions) == {"v1", "v2"} and stored.routing == RoutingConfig(
                **weighted(weights)
            ):
                return time.perf_counter() - started
            assert time.perf_counter() - started < seconds, f"not stored again: {stored}"
            await asyncio.sleep(0.05)
    finally:
        await state.close()


async def test_a_5_s_redis_outage_fails_no_inference_and_refuses_control_writes(
    own_redis: RedisServer,
) -> None:
    outage = 5.0
    async with sharing(own_redis, WORKERS) as fleet, steady_load(fleet) as answers:
        pids = fleet.pids
        await eventually(lambda: len(answers) >= 100)  # the load is steady before the outage
        kept = [80, 20]
        status, answer = await put_routing(fleet, kept)
        assert status == 200, answer
        await in_force_everywhere(fleet, pids, kept, time.perf_counter())

        own_redis.stop()  # without persistence: it comes back empty
        down = time.perf_counter()
        refusals: list[tuple[float, int, Any]] = []
        while time.perf_counter() - down < outage - 1.5:
            asked = time.perf_counter()
            status, answer = await put_routing(fleet, [50, 50])
            refusals.append((time.perf_counter() - asked, status, answer))
            await asyncio.sleep(0.2)
        slowest = max(seconds for seconds, _, _ in refusals) * 1e3
        codes = {(status, answer.get("code")) for _, status, answer in refusals}
        assert codes == {(503, "state_unavailable")}, f"{refusals}"
        assert all(isinstance(answer["error"], str) for _, _, answer in refusals)
        # Refused, so made nowhere: every worker still routes as before the outage.
        await in_force_everywhere(fleet, pids, kept, time.perf_counter(), seconds=1.0)
        await asyncio.sleep(max(0.0, outage - (time.perf_counter() - down)))

        own_redis.start()  # on the same port
        up = time.perf_counter()
        # Reconciled: the workers store what they serve again, beat, and one leads.
        reseeded = await stored_again(own_redis.url, kept)
        by_pid = await listed(fleet, loaded_on(pids))
        await listed(fleet, lambda by_pid: sum(f["leads"] for f in by_pid.values()) == 1)

        changed = [30, 70]
        started = time.perf_counter()
        status, answer = await put_routing(fleet, changed)
        assert status == 200, answer
        after = await in_force_everywhere(fleet, pids, changed, started) * 1e3
    statuses = [status for _, status in answers]
    during = sum(down <= when < up for when, _ in answers)
    gap = max(b - a for (a, _), (b, _) in itertools.pairwise(answers)) * 1e3
    failed = [status for status in statuses if status != 200]
    figures = (
        f"{len(failed)} of {len(statuses)} inference requests failed, {during} of them answered"
        f" during the {up - down:.1f} s outage; longest wait between answers {gap:.0f} ms;"
        f" {len(refusals)} routing changes refused (slowest in {slowest:.0f} ms);"
        f" stored again {reseeded * 1e3:.0f} ms after Redis returned;"
        f" a change after it in force on all {len(by_pid)} workers in {after:.1f} ms"
    )
    assert failed == [], figures + f": {failed[:5]}"
    assert during > 0, figures
    assert gap < 1000, figures
    assert after < 1000, figures
    assert fleet.process.returncode == 0
    assert fleet.process.stderr is not None
    log = (await fleet.process.stderr.read()).decode()
    assert "Traceback" not in log, log
    assert "went back from revision" in log  # the store came back empty, and was written again
    # The outage is said once per worker, where it is found, not once per request refused.
    lost = log.count("the control-state feed from")
    assert 1 <= lost <= WORKERS, f"{lost} lines of the lost feed: {log[-3000:]}"
    mentions = sum("unreachable" in line for line in log.splitlines())
    assert mentions <= 2 * WORKERS, f"{mentions} lines saying unreachable, {figures}: {log[-3000:]}"


async def test_the_embedded_state_locked_6_s_fails_no_inference_and_refuses_control_writes(
    tmp_path: Any,
) -> None:
    import sqlite3

    repository = tmp_path / "models"
    locked_for = 6.5  # past the 5 s a write waits for another's lock
    async with (
        serving(WORKERS, "--repository", str(repository)) as fleet,
        steady_load(fleet) as answers,
    ):
        pids = fleet.pids
        await eventually(lambda: len(answers) >= 100)
        kept = [80, 20]
        status, answer = await put_routing(fleet, kept)
        assert status == 200, answer
        await in_force_everywhere(fleet, pids, kept, time.perf_counter())

        # Another program holds the store's write lock, as a backup tool or a stuck
        # process would: in WAL mode readers go on, every writer waits, then gives up.
        holder = sqlite3.connect(
            repository / ".turnout" / "control-state.db", timeout=5, check_same_thread=False
        )
        await asyncio.to_thread(holder.execute, "BEGIN EXCLUSIVE")
        down = time.perf_counter()
        refusals: list[tuple[float, int, Any]] = []
        try:
            while time.perf_counter() - down < locked_for - 5.5:
                asked = time.perf_counter()
                status, answer = await put_routing(fleet, [50, 50])
                refusals.append((time.perf_counter() - asked, status, answer))
            await in_force_everywhere(fleet, pids, kept, time.perf_counter(), seconds=1.0)
            await asyncio.sleep(max(0.0, locked_for - (time.perf_counter() - down)))
        finally:
            holder.rollback()
            holder.close()
        up = time.perf_counter()

        changed = [30, 70]
        status, answer = await put_routing(fleet, changed)
        assert status == 200, answer
        after = await in_force_everywhere(fleet, pids, changed, time.perf_counter()) * 1e3
    statuses = [status for _, status in answers]
    during = sum(down <= when < up for when, _ in answers)
    failed = [status for status in statuses if status != 200]
    codes = {(status, answer.get("code")) for _, status, answer in refusals}
    figures = (
        f"{len(failed)} of {len(statuses)} inference requests failed, {during} answered during"
        f" the {up - down:.1f} s lock; {len(refusals)} routing changes refused as {codes},"
        f" the slowest in {max(s for s, _, _ in refusals):.1f} s; a change after it in force"
        f" on all workers in {after:.0f} ms"
    )
    assert failed == [], figures + f": {failed[:5]}"
    assert during > 0, figures
    assert codes == {(503, "state_unavailable")}, figures
    assert after < 1000, figures
    assert fleet.process.stderr is not None
    log = (await fleet.process.stderr.read()).decode()
    assert "Traceback" not in log, log
    said = sum("is unavailable:" in line for line in log.splitlines())
    assert 1 <= said <= WORKERS, f"the lock was logged {said} times: {log[-3000:]}"
