"""The fleet on this machine: 3 replicas x 2 workers behind a real nginx, one real Redis.

``python -m benchmarks fleet``'s scenarios, kept short: a rolling restart,
SIGKILL of the leader's replica, a canary judged by the one leader on the
other replicas' traffic, and routing changes timed on every replica.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.fleet import FleetSettings, run_scenarios, running_fleet, table

from services import nginx_binary, redis_binary

SHORT = FleetSettings(concurrency=8, settle=1.0, canary_min_requests=150, routing_changes=5)


async def test_the_fleet_survives_restarts_a_kill_a_canary_and_routing_changes(
    tmp_path: Path,
) -> None:
    binaries = {"redis_binary": redis_binary(), "nginx_binary": nginx_binary()}
    async with running_fleet(SHORT, tmp_path, **binaries) as fleet:
        reports = await run_scenarios(fleet)
        logs = fleet.logs()
    summary = "\n".join(table(reports))
    by_name = {r.scenario: r for r in reports}
    assert all(r.met for r in reports), f"{summary}\n\n{[r.facts for r in reports]}\n\n{logs}"
    assert by_name["rolling restart"].failed == 0
    kill = by_name["kill the leader's replica"]
    assert kill.facts["recovered_seconds"] <= 1.0
    assert kill.facts["takeover_seconds"] <= 2 * 3.0 + 1.0  # 2 x the lease, and a heartbeat
    canary = by_name["canary through one replica"]
    assert canary.facts["events"] == ["started", "step", "promoted"]
    assert canary.facts["served_by_leader"] == 0
    assert max(by_name["routing change"].facts["delays"]) <= 1.0
    assert all(r.requests > 100 for r in reports), summary  # load ran all along
