"""GET /admin/snapshot and the status page's files, over a real aiohttp server.

The page itself is driven in a real browser in test_status_page.py; these
tests pin what it is given to draw.
"""

from __future__ import annotations

from typing import Any

import pytest
from web_helpers import expect_error

from support import eventually
from turnout import ModelServer
from turnout.core.routing.config import RoutingConfig
from turnout.web.snapshot import HISTORY_KEY

CANCER = "/admin/models/cancer"


async def snapshot_of(admin: Any, model: str = "cancer") -> dict[str, Any]:
    """The snapshot's entry for ``model``."""
    response = await admin.get("/admin/snapshot")
    assert response.status == 200, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    (found,) = [m for m in body["models"] if m["name"] == model]
    return found


async def test_the_page_is_served_to_anyone_but_its_data_only_with_the_token(
    make_admin: Any, cancer: ModelServer
) -> None:
    client = await make_admin()
    page = await client.get("/ui/")
    assert page.status == 200
    assert page.content_type == "text/html"
    html = await page.text()
    assert 'data-auth="token"' in html
    assert '<script src="app.js" defer>' in html
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    for asset, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        response = await client.get(f"/ui/{asset}")
        assert response.status == 200
        assert response.content_type == kind
    redirect = await client.get("/", allow_redirects=False)
    assert (redirect.status, redirect.headers["Location"]) == (302, "/ui/")

    await expect_error(await client.get("/admin/snapshot"), 401, "unauthorized")
    await expect_error(await client.get("/ui/secrets.txt"), 401, "unauthorized")


async def test_without_a_token_the_page_says_it_needs_none(
    make_admin: Any, cancer: ModelServer
) -> None:
    client = await make_admin(token=None, allow_unauthenticated=True)
    assert 'data-auth="loopback"' in await (await client.get("/ui/")).text()
    assert (await client.get("/admin/snapshot")).status == 200


async def test_a_weighted_split_its_versions_and_their_states(
    admin: Any, cancer: ModelServer
) -> None:
    await cancer.setup_ab_test("cancer", ["v1", "v2"], [0.7, 0.3])
    model = await snapshot_of(admin)

    assert model["active"] == "v1"
    assert model["routing"]["strategy"] == "weighted"
    assert model["split"] == {"shares": {"v1": 0.7, "v2": 0.3}, "mirrors": {}}
    v1, v2 = model["versions"]
    assert (v1["version"], v1["status"], v2["status"]) == ("v1", "active", "inactive")
    assert v1["breaker"]["state"] == "closed"
    assert v1["health"]["status"] in {"healthy", "unknown"}
    # Never seen changing: in its state since it was deployed.
    assert v1["status_since"] == v1["deployed_at"] == v1["breaker"]["since"]
    assert model["comparison"]["verdict"].startswith("not enough outcomes")
    assert model["canary"] is None
    assert model["shadows"] == []


async def test_a_state_change_restarts_its_clock(admin: Any, cancer: ModelServer) -> None:
    before = (await snapshot_of(admin))["versions"][1]
    await cancer.set_active_version("cancer", "v2")
    after = (await snapshot_of(admin))["versions"][1]
    assert (before["status"], after["status"]) == ("inactive", "active")
    assert after["status_since"] > before["status_since"]


async def test_traffic_is_sampled_into_the_history(
    admin: Any, cancer: ModelServer, binary_data: Any
) -> None:
    history = admin.server.app[HISTORY_KEY]
    history.sample()
    for row in binary_data.records(20):
        await cancer.predict("cancer", [row])
    history.sample()
    v1 = (await snapshot_of(admin))["versions"][0]
    # The last sample is the interval of the 20 requests (the sampler may add others).
    assert v1["history"]["requests_per_second"][-1] > 0
    assert v1["history"]["error_rate"][-1] == 0.0
    assert v1["history"]["p99_ms"][-1] >= v1["history"]["p50_ms"][-1] > 0
    assert v1["requests"] == 20
    model = await snapshot_of(admin)
    assert model["observed"] == {"v1": 1.0, "v2": 0.0}


async def test_a_canary_shows_its_plan_and_history(admin: Any, cancer: ModelServer) -> None:
    await cancer.start_canary("cancer", "v2", steps=[0.1, 0.5, 1.0], min_requests=1000)
    model = await snapshot_of(admin)
    assert model["canary"]["steps"] == [0.1, 0.5, 1.0]
    assert model["canary"]["step"] == 0
    assert model["split"]["shares"] == {"v1": pytest.approx(0.9), "v2": pytest.approx(0.1)}
    assert [e["event"] for e in model["rollouts"]] == ["started"]

    await cancer.abort_canary("cancer")
    model = await snapshot_of(admin)
    assert model["canary"] is None
    assert model["rollouts"][-1]["event"] != "started"


async def test_a_shadow_shows_its_mirror_and_its_statistics(
    admin: Any, cancer: ModelServer, binary_data: Any
) -> None:
    params = {"primary": "v1", "mirrors": {"v2": 1.0}}
    await cancer.set_routing("cancer", RoutingConfig("shadow", params))
    for row in binary_data.records(5):
        await cancer.predict("cancer", [row])

    def compared() -> bool:
        shadows = cancer.shadow_statistics("cancer")
        return bool(shadows) and shadows[0].compared == 5

    await eventually(compared)  # shadows are compared off the request path
    model = await snapshot_of(admin)
    assert model["split"] == {"shares": {"v1": 1.0}, "mirrors": {"v2": 1.0}}
    (shadow,) = model["shadows"]
    assert (shadow["primary"], shadow["shadow"], shadow["compared"]) == ("v1", "v2", 5)


@pytest.mark.parametrize(
    ("config", "shares"),
    [
        (RoutingConfig("active"), {"v1": 1.0}),
        (
            RoutingConfig("weighted", {"versions": ["v1", "v2"], "weights": [3, 1]}),
            {"v1": 0.75, "v2": 0.25},
        ),
        (
            RoutingConfig("sticky", {"versions": ["v1", "v2"], "weights": [0.5, 0.5]}),
            {"v1": 0.5, "v2": 0.5},
        ),
        (RoutingConfig("blue_green", {"blue": "v1", "green": "v2", "live": "green"}), {"v2": 1.0}),
        # A bandit's shares change with every outcome: the page shows what it sent.
        (RoutingConfig("bandit", {"versions": ["v1", "v2"]}), None),
    ],
)
async def test_each_built_in_strategy_declares_its_split(
    cancer: ModelServer, config: RoutingConfig, shares: dict[str, float] | None
) -> None:
    await cancer.set_routing("cancer", config)
    assert cancer.routing_split("cancer").shares == shares


async def test_a_canary_routed_by_hand_shows_the_plans_defaults(
    admin: Any, cancer: ModelServer
) -> None:
    await cancer.set_routing(
        "cancer", RoutingConfig("canary", {"baseline": "v1", "candidate": "v2"})
    )
    canary = (await snapshot_of(admin))["canary"]
    assert (canary["steps"], canary["step"]) == ([0.05, 0.25, 0.5, 1.0], 0)


async def test_a_version_deployed_again_starts_its_clock_again(
    admin: Any, cancer: ModelServer, binary_model_v2: Any
) -> None:
    first = (await snapshot_of(admin))["versions"][1]
    await cancer.retire_model("cancer", "v2")
    await cancer.deploy_model("cancer", "v2", binary_model_v2, set_active=False)
    again = (await snapshot_of(admin))["versions"][1]
    assert again["deployed_at"] > first["deployed_at"]
    assert again["status_since"] == again["deployed_at"]
    assert again["breaker"]["since"] == again["deployed_at"]
