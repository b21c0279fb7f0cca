"""The admin API over a real aiohttp server: deploy ONNX, route, roll out, retire, inspect."""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
from typing import Any

import pytest
from web_helpers import ADMIN_TOKEN, assert_close, expect_error

from turnout import ModelServer
from turnout.core.errors import InvalidConfigError
from turnout.web.admin import create_admin_app

CANCER = "/admin/models/cancer"


@pytest.fixture
async def deployed(admin, cancer_onnx, binary_data) -> Any:
    """The admin client, after uploading model "cancer" v1 (active) and v2."""
    features = binary_data.features
    for version in ("v1", "v2"):
        body = {"onnx": cancer_onnx, "features": features, "metadata": {"team": "risk"}}
        response = await admin.post(f"{CANCER}/versions/{version}", json=body)
        assert response.status == 201, await response.text()
    return admin


# -- authentication ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("Basic dXNlcjpwYXNz", 401, "unauthorized"),
        ("Bearer", 401, "unauthorized"),
        ("Bearer wrong-token-wrong-token", 403, "forbidden"),
        (f"Bearer {ADMIN_TOKEN}x", 403, "forbidden"),
        (f"Bearer {ADMIN_TOKEN[:-1]}", 403, "forbidden"),
    ],
)
async def test_without_the_right_token_nothing_changes(
    make_admin, server: ModelServer, cancer_onnx, header, status, code
) -> None:
    client = await make_admin()
    headers = {"Authorization": header} if header else {}
    response = await client.post(
        f"{CANCER}/versions/v1", json={"onnx": cancer_onnx}, headers=headers
    )
    error = await expect_error(response, status, code)
    assert ADMIN_TOKEN not in error["error"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "the word Bearer, a space, then the token" in error["error"]
    assert server.get_all_models_status() == {}
    await expect_error(await client.get("/admin/status", headers=headers), status, code)


async def test_the_openapi_document_needs_no_token(make_admin) -> None:
    client = await make_admin()
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert (await response.json())["info"]["title"] == "turnout admin"


async def test_an_admin_api_without_a_token_must_be_asked_for(server: ModelServer) -> None:
    with pytest.raises(InvalidConfigError, match="token"):
        create_admin_app(server, token=None)
    with pytest.raises(InvalidConfigError, match="at least 16"):
        create_admin_app(server, token="short")
    with pytest.raises(InvalidConfigError, match="printable ASCII"):
        create_admin_app(server, token="a token with spaces in it")


async def test_an_unauthenticated_admin_api_answers_loopback(make_admin) -> None:
    client = await make_admin(token=None, allow_unauthenticated=True)
    response = await client.get("/admin/status")
    assert response.status == 200
    assert await response.json() == {"models": {}, "pid": os.getpid()}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "http://127.0.0.1:8081"}, 200),
        ({"Origin": "http://localhost:8081", "Host": "localhost:8081"}, 200),
        ({"Host": "[::1]:8081"}, 200),
        # A page of another site posting to the API through the user's browser.
        ({"Origin": "https://attacker.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Origin": "http://[not-an-address"}, 403),
        # Another site's name resolved to 127.0.0.1, so that its script reads the answer.
        ({"Host": "rebound.attacker.example:8081"}, 403),
    ],
)
async def test_an_unauthenticated_admin_api_refuses_other_sites_in_a_browser(
    make_admin, server: ModelServer, headers: dict[str, str], status: int
) -> None:
    client = await make_admin(token=None, allow_unauthenticated=True)
    response = await client.get("/admin/snapshot", headers=headers)
    if status == 200:
        assert response.status == 200, await response.text()
    else:
        error = await expect_error(response, 403, "forbidden")
        assert "token" in error["error"]


async def test_the_inference_api_has_no_admin_routes(http) -> None:
    await expect_error(await http.get("/admin/status"), 404, "not_found")
    await expect_error(await http.post("/v2/repository/index"), 404, "not_found")


# -- deploying -----------------------------------------------------------------------------


async def test_an_uploaded_onnx_model_serves_like_the_original(
    admin, server: ModelServer, cancer_onnx, binary_model, binary_data
) -> None:
    body = {"onnx": cancer_onnx, "features": binary_data.features, "metadata": {"run": "42"}}
    response = await admin.post(f"{CANCER}/versions/v1", json=body)
    assert response.status == 201, await response.text()
    answer = await response.json()
    assert answer["sha256"] == hashlib.sha256(base64.b64decode(cancer_onnx)).hexdigest()
    assert answer["active"] is True
    assert answer["status"]["metadata"] == {"run": "42"}
    assert answer["status"]["features"] == binary_data.features

    rows = binary_data.records(5)
    assert_close(
        await server.predict("cancer", rows),
        binary_model.predict_proba(binary_data.X_test.iloc[:5])[:, 1],
    )


async def test_deploy_options_reach_the_deployment(admin, server, cancer_onnx) -> None:
    body = {
        "onnx": cancer_onnx,
        "output": "label",
        "set_active": True,
        "batching": {"max_batch_rows": 8, "timeout_ms": 500},
        "breaker": {"cool_down": 2.0},
        "error_threshold": 0.2,
    }
    assert (await admin.post(f"{CANCER}/versions/v1", json=body)).status == 201
    deployment = server.get_deployment("cancer", "v1")
    assert deployment.batcher.config.max_batch_rows == 8
    assert deployment.decoder.mode.value == "label"


async def test_a_version_that_exists_is_a_conflict_unless_replaced(deployed, cancer_onnx) -> None:
    url = f"{CANCER}/versions/v1"
    await expect_error(await deployed.post(url, json={"onnx": cancer_onnx}), 409, "version_exists")
    response = await deployed.post(url, json={"onnx": cancer_onnx, "replace": True})
    assert response.status == 201


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 400, "invalid_request", "onnx"),
        ({"onnx": 12}, 400, "invalid_request", "onnx"),
        ({"onnx": "not base64!"}, 400, "invalid_request", "onnx"),
        ({"onnx": ""}, 400, "invalid_request", "onnx"),
        ({"onnx": base64.b64encode(b"not an onnx model").decode()}, 422, "conversion_failed", None),
        ({"onnx": "AA==", "features": "a,b"}, 400, "invalid_request", "features"),
        ({"onnx": "AA==", "features": [1, 2]}, 400, "invalid_request", "features"),
        ({"onnx": "AA==", "replace": "yes"}, 400, "invalid_request", "replace"),
        ({"onnx": "AA==", "batching": {"max_batch_rows": 0}}, 400, "invalid_config", "batching"),
        ({"onnx": "AA==", "batching": {"max_batch_rows": "8"}}, 400, "invalid_config", "batching"),
        ({"onnx": "AA==", "batching": {"rows": 8}}, 400, "invalid_request", "batching.rows"),
        ({"onnx": "AA==", "error_threshold": 10**400}, 400, "invalid_request", "error_threshold"),
        ({"onnx": "AA==", "path": "/etc/passwd"}, 400, "invalid_request", "path"),
    ],
)
async def test_bad_uploads_are_client_errors(admin, server, body, status, code, field) -> None:
    error = await expect_error(await admin.post(f"{CANCER}/versions/v1", json=body), status, code)
    assert error.get("field") == field
    assert server.get_all_models_status() == {}


async def test_a_pickle_is_never_unpickled(admin, server, binary_model) -> None:
    class Boom:
        def __reduce__(self) -> Any:
            return (exec, ("raise SystemExit('unpickled!')",))

    for payload in (pickle.dumps(binary_model), pickle.dumps(Boom())):
        body = {"onnx": base64.b64encode(payload).decode()}
        error = await expect_error(
            await admin.post(f"{CANCER}/versions/v1", json=body), 400, "invalid_request"
        )
        assert "pickle" in error["error"]
    assert server.get_all_models_status() == {}


async def test_wrong_names_and_bodies(admin, cancer_onnx) -> None:
    for url in ("/admin/models/.hidden/versions/v1", "/admin/models/m/versions/a%20b"):
        response = await admin.post(url, json={"onnx": cancer_onnx})
        await expect_error(response, 400, "invalid_name")
    await expect_error(
        await admin.post(
            f"{CANCER}/versions/v1", data=b"{", headers={"Content-Type": "application/json"}
        ),
        400,
        "malformed_json",
    )
    await expect_error(
        await admin.post(
            f"{CANCER}/versions/v1", data=b"x", headers={"Content-Type": "text/plain"}
        ),
        415,
        "unsupported_media_type",
    )
    await expect_error(await admin.post(f"{CANCER}/versions/v1", json=[1]), 400, "invalid_request")


async def test_the_body_limit_holds(make_admin) -> None:
    client = await make_admin(max_body_bytes=1024)
    response = await client.post(
        f"{CANCER}/versions/v1",
        json={"onnx": "A" * 4096},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    await expect_error(response, 413, "body_too_large")


# -- versions, routing and rollouts --------------------------------------------------------


async def test_status_lists_every_model_and_version(deployed) -> None:
    status = await (await deployed.get("/admin/status")).json()
    model = status["models"]["cancer"]
    assert model["active"] == "v1"
    assert model["routing"] == {"strategy": "active", "params": {}}
    assert sorted(model["versions"]) == ["v1", "v2"]
    assert model["versions"]["v1"]["metadata"] == {"team": "risk"}
    assert await (await deployed.get(CANCER)).json() == model


async def test_set_active_and_retire(deployed, server: ModelServer) -> None:
    response = await deployed.put(f"{CANCER}/active", json={"version": "v2"})
    assert (await response.json())["active"] == "v2"
    assert server.active_models["cancer"] == "v2"
    response = await deployed.delete(f"{CANCER}/versions/v1")
    assert await response.json() == {"model": "cancer", "retired": "v1", "active": "v2"}
    await expect_error(await deployed.delete(f"{CANCER}/versions/v1"), 404, "version_not_found")
    await expect_error(
        await deployed.put(f"{CANCER}/active", json={"version": "v9"}), 404, "version_not_found"
    )
    await expect_error(
        await deployed.put(f"{CANCER}/active", json={"versions": "v2"}), 400, "invalid_request"
    )


async def test_routing_is_read_and_replaced(deployed, server: ModelServer) -> None:
    weighted = {"strategy": "weighted", "params": {"versions": ["v1", "v2"], "weights": [0.5, 0.5]}}
    response = await deployed.put(f"{CANCER}/routing", json=weighted)
    assert response.status == 200, await response.text()
    assert await response.json() == weighted
    assert server.get_routing("cancer").to_dict() == weighted
    assert await (await deployed.get(f"{CANCER}/routing")).json() == weighted

    bad = {"strategy": "weighted", "params": {"versions": ["v1", "v9"], "weights": [1.0, 1.0]}}
    await expect_error(await deployed.put(f"{CANCER}/routing", json=bad), 400, "invalid_routing")
    unknown = {"strategy": "no-such-strategy"}
    await expect_error(
        await deployed.put(f"{CANCER}/routing", json=unknown), 400, "invalid_routing"
    )
    await expect_error(
        await deployed.put(f"{CANCER}/routing", json={"strategy": "weighted", "params": []}),
        400,
        "invalid_request",
    )
    assert server.get_routing("cancer").to_dict() == weighted


async def test_a_canary_starts_shows_its_history_and_aborts(deployed, server) -> None:
    response = await deployed.post(
        f"{CANCER}/canary", json={"candidate": "v2", "steps": [0.1, 0.5], "min_requests": 10}
    )
    assert response.status == 201, await response.text()
    assert (await response.json())["routing"]["strategy"] == "canary"
    history = await (await deployed.get(f"{CANCER}/rollouts")).json()
    assert history["events"]
    assert {"at", "candidate", "step", "weight", "event", "reason"} <= set(history["events"][0])

    response = await deployed.delete(f"{CANCER}/canary")
    assert response.status == 200
    assert server.active_models["cancer"] == "v1"
    await expect_error(await deployed.delete(f"{CANCER}/canary"), 400, "invalid_routing")
    await expect_error(
        await deployed.post(f"{CANCER}/canary", json={"candidate": "v2", "steps": ["a"]}),
        400,
        "invalid_request",
    )


async def test_blue_green_switch_with_a_smoke_test_and_rollback(
    deployed, server, binary_data, binary_model
) -> None:
    samples = binary_data.records(3)
    expected = binary_model.predict_proba(binary_data.X_test.iloc[:3])[:, 1].tolist()
    response = await deployed.post(
        f"{CANCER}/blue-green",
        json={"green": "v2", "samples": samples, "expected": expected, "tolerance": 1e-4},
    )
    assert response.status == 200, await response.text()
    assert server.active_models["cancer"] == "v2"

    response = await deployed.post(f"{CANCER}/blue-green/rollback")
    assert response.status == 200
    assert server.active_models["cancer"] == "v1"

    wrong = {"green": "v2", "samples": samples, "expected": [9.0, 9.0, 9.0]}
    await expect_error(
        await deployed.post(f"{CANCER}/blue-green", json=wrong), 409, "smoke_test_failed"
    )
    assert server.active_models["cancer"] == "v1"


async def test_breaker_fallback_and_health(deployed, server: ModelServer) -> None:
    breaker = await (await deployed.get(f"{CANCER}/versions/v1/breaker")).json()
    assert breaker["state"] == "closed"
    response = await deployed.post(f"{CANCER}/versions/v1/breaker/reset")
    assert (await response.json())["state"] == "closed"

    assert await (await deployed.get(f"{CANCER}/fallback")).json() == {"fallback": None}
    response = await deployed.put(f"{CANCER}/fallback", json={"version": "v2"})
    assert await response.json() == {"fallback": {"version": "v2"}}
    assert server.get_fallback("cancer").version == "v2"
    response = await deployed.put(f"{CANCER}/fallback", json={"value": 0.5})
    assert await response.json() == {"fallback": {"value": 0.5}}
    await expect_error(
        await deployed.put(f"{CANCER}/fallback", json={"value": "half"}), 400, "invalid_request"
    )
    await expect_error(
        await deployed.put(f"{CANCER}/fallback", json={"version": "v2", "value": 1}),
        400,
        "invalid_config",
    )
    assert (await deployed.delete(f"{CANCER}/fallback")).status == 200
    assert server.get_fallback("cancer") is None

    report = await (await deployed.get(f"{CANCER}/versions/v1/health")).json()
    assert report["model_id"] == "cancer"
    assert report["status"] in ("healthy", "degraded", "unhealthy", "unknown")
    reports = (await (await deployed.get("/admin/health")).json())["reports"]
    assert [(r["model_id"], r["version"]) for r in reports] == [("cancer", "v1"), ("cancer", "v2")]


async def test_outcome_feedback_and_comparison(deployed, server, binary_data) -> None:
    weighted = {"strategy": "weighted", "params": {"versions": ["v1", "v2"], "weights": [0.5, 0.5]}}
    await deployed.put(f"{CANCER}/routing", json=weighted)
    results = [await server.infer("cancer", binary_data.records(1)) for _ in range(40)]
    outcomes = [{"request_id": r.request_id, "outcome": i % 2} for i, r in enumerate(results)]
    response = await deployed.post(f"{CANCER}/outcomes", json={"outcomes": outcomes})
    assert response.status == 200, await response.text()
    recorded = await response.json()
    assert recorded["recorded"] == 40
    assert recorded["versions"] == [r.version for r in results]

    comparison = await (await deployed.get(f"{CANCER}/compare?a=v1&b=v2")).json()
    assert comparison["a"]["count"] + comparison["b"]["count"] == 40
    assert isinstance(comparison["verdict"], str)
    await expect_error(await deployed.get(f"{CANCER}/compare?a=v1"), 400, "invalid_request")

    again = {"outcomes": [{"request_id": results[0].request_id, "outcome": 1}]}
    await expect_error(await deployed.post(f"{CANCER}/outcomes", json=again), 400, "invalid_input")
    partial = {"outcomes": [{"request_id": "nope", "outcome": 1}]}
    await expect_error(
        await deployed.post(f"{CANCER}/outcomes", json=partial), 400, "invalid_input"
    )
    bad = {"outcomes": [{"request_id": "x", "outcome": "good"}]}
    error = await expect_error(
        await deployed.post(f"{CANCER}/outcomes", json=bad), 400, "invalid_request"
    )
    assert error["field"] == "outcomes[0].outcome"


async def test_shadow_statistics(deployed, server, binary_data) -> None:
    shadow = {"strategy": "shadow", "params": {"primary": "v1", "mirrors": {"v2": 1.0}}}
    response = await deployed.put(f"{CANCER}/routing", json=shadow)
    assert response.status == 200, await response.text()
    for _ in range(5):
        await server.predict("cancer", binary_data.records(2))
    await server.evaluate_health()  # a loop turn or two for the mirrored requests to land
    stats = (await (await deployed.get(f"{CANCER}/shadow")).json())["shadows"]
    assert [(s["primary"], s["shadow"]) for s in stats] == [("v1", "v2")]


async def test_unknown_models_are_404(admin) -> None:
    for path in ("/admin/models/nope", "/admin/models/nope/routing", "/admin/models/nope/shadow"):
        await expect_error(await admin.get(path), 404, "model_not_found")


@pytest.mark.parametrize("runtime", ["python", "onnx"])
async def test_an_upload_names_no_runtime(admin, server: ModelServer, cancer_onnx, runtime) -> None:
    # Python versions are for the Python API only: nothing sent over the network
    # runs as Python, and an upload has no say in what runs it.
    body = {"onnx": cancer_onnx, "runtime": runtime}
    error = await expect_error(
        await admin.post(f"{CANCER}/versions/v1", json=body), 400, "invalid_request"
    )
    assert error["field"] == "runtime"
    assert server.get_all_models_status() == {}
