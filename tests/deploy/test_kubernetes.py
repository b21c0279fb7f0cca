"""The container image and the Kubernetes base in ``deploy/``: valid, and true to turnout serve.

Each manifest is validated against the Kubernetes API's JSON schema
(kubernetes-validate, strict: a misspelt field fails). Then the Deployment
is run as a kubelet would run it, minus the container: ``turnout serve``
with the Deployment's args and environment (addresses on loopback, ports
free, the repository in a temporary directory, its Redis a real one), and
its probes and ports are asked of that server.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest
import yaml

from services import RedisServer, free_port
from support import answers
from turnout import AdminClient
from turnout.core.execution.convert import load_model
from turnout.serve_environment import SERVE_ENVIRONMENT

DEPLOY = Path(__file__).parents[2] / "deploy"
BASE = DEPLOY / "kubernetes"
KUBERNETES_VERSION = "1.30.0"
TOKEN = "deploy-test-token-0123456789"


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every manifest of the base, with the file it is in."""
    for path in sorted(BASE.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            yield path.name, document


def kind(name: str) -> dict[str, Any]:
    """The one manifest of ``kind`` in the base."""
    (found,) = [d for _, d in documents() if d["kind"] == name]
    return found


def container() -> dict[str, Any]:
    """The turnout container of the Deployment."""
    (turnout,) = kind("Deployment")["spec"]["template"]["spec"]["containers"]
    return turnout  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "document", [d for _, d in documents()], ids=[f"{f}:{d['kind']}" for f, d in documents()]
)
def test_each_manifest_is_valid_against_the_kubernetes_api_schema(document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_and_the_base_has_what_a_fleet_needs() -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    kinds = {d["kind"] for _, d in documents()}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "StatefulSet",
        "PersistentVolumeClaim",
    } <= kinds
    assert kind("PersistentVolumeClaim")["spec"]["accessModes"] == ["ReadWriteMany"]


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    """The container's plain environment values (the token comes from the Secret)."""
    return {e["name"]: e["value"] for e in spec["env"] if "value" in e}


def test_every_variable_the_deployment_sets_is_one_turnout_serve_reads() -> None:
    names = {e["name"] for e in container()["env"]}
    assert names <= set(SERVE_ENVIRONMENT), names - set(SERVE_ENVIRONMENT)
    (token,) = [e for e in container()["env"] if e["name"] == "TURNOUT_ADMIN_TOKEN"]
    reference = token["valueFrom"]["secretKeyRef"]
    # The Secret is generated from a file never committed, whose example names the key.
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    (generator,) = kustomization["secretGenerator"]
    assert generator["name"] == reference["name"]
    assert generator["options"]["disableNameSuffixHash"] is True
    (env_file,) = generator["envs"]
    example = (BASE / f"{env_file}.example").read_text()
    assert f"\n{reference['key']}=\n" in example  # the example holds no token
    assert f"deploy/kubernetes/{env_file}" in (BASE.parents[1] / ".gitignore").read_text()


def test_ports_probes_and_the_grace_period_agree_with_the_environment() -> None:
    spec, env = container(), env_of(container())
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {"http": int(env["TURNOUT_PORT"]), "admin": int(env["TURNOUT_ADMIN_PORT"])}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert spec[probe]["httpGet"]["port"] == "http"
    assert spec["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert spec["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    pod = kind("Deployment")["spec"]["template"]["spec"]
    pause = int(spec["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] >= float(env["TURNOUT_SHUTDOWN_TIMEOUT"]) + pause
    assert {"limits", "requests"} <= set(spec["resources"])
    for service in (d for _, d in documents() if d["kind"] == "Service"):
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports or port["targetPort"] == "redis", service
    # The Deployment reaches the Redis the base runs.
    redis = [
        d for _, d in documents() if d["kind"] == "Service" and "redis" in d["metadata"]["name"]
    ]
    assert env["TURNOUT_STATE"].startswith(f"redis://{redis[0]['metadata']['name']}:6379/")


def test_the_image_runs_turnout_serve_as_a_user_with_a_readiness_healthcheck() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["turnout", "serve"\]$', dockerfile, re.M)
    user = re.search(r"^USER (\S+)$", dockerfile, re.M)
    assert user is not None
    assert user.group(1) not in ("0", "root")
    assert re.search(r"^HEALTHCHECK .*/v2/health/ready", dockerfile, re.M | re.S)
    assert re.search(r'pip install "\.\[serve\]"', dockerfile)
    for variable in re.findall(r"\b(TURNOUT_[A-Z_]+)=", dockerfile):
        assert variable in SERVE_ENVIRONMENT, variable
    run_as = kind("Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    assert str(run_as) == user.group(1)


async def test_turnout_serve_run_as_the_deployment_says_answers_its_probes(
    own_redis: RedisServer, tmp_path: Path, binary_model: Any
) -> None:
    spec, env = container(), env_of(container())
    port, admin_port = free_port(), free_port()
    run = {
        **env,
        # Where a pod has an address of its own, the test has loopback and free ports.
        "TURNOUT_HOST": "127.0.0.1",
        "TURNOUT_ADMIN_HOST": "127.0.0.1",
        "TURNOUT_PORT": str(port),
        "TURNOUT_ADMIN_PORT": str(admin_port),
        "TURNOUT_STATE": f"{own_redis.url}/0",
        "TURNOUT_REPOSITORY": str(tmp_path / "models"),
        "TURNOUT_ARTIFACTS": str(tmp_path / "artifacts"),
        "TURNOUT_ADMIN_TOKEN": TOKEN,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turnout", "serve", *spec["args"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **run},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    probe = {name: spec[name]["httpGet"]["path"] for name in ("readinessProbe", "livenessProbe")}
    try:
        connector = aiohttp.TCPConnector(force_close=True)  # fresh: spread over the workers
        async with aiohttp.ClientSession(connector=connector) as session:
            await answers(session, url + probe["livenessProbe"])
            # With no model deployed a pod is live, not ready: it gets no inference traffic,
            # and its admin API (a Service publishing unready pods) takes the first deploy.
            await answers(session, url + probe["readinessProbe"], want=503)
            async with AdminClient(f"http://127.0.0.1:{admin_port}", TOKEN) as admin:
                await admin.deploy("cancer", "v1", load_model(binary_model).onnx_bytes or b"")
                await answers(session, url + probe["readinessProbe"])  # every worker loaded it
                # Each worker says what it loaded in its heartbeat, once a second.
                workers, fleet = int(env["TURNOUT_WORKERS"]), {}
                for _ in range(50):
                    fleet = (await admin.fleet())["processes"]
                    loaded = [f for f in fleet.values() if "cancer" in f["models"]]
                    if len(loaded) == workers:
                        break
                    await asyncio.sleep(0.1)
        assert len(loaded) == workers, fleet
        assert (tmp_path / "models" / "cancer" / "v1").is_dir()  # one of them wrote it
    finally:
        if process.returncode is None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 60)


async def test_an_empty_token_stops_the_pod_with_the_reason(tmp_path: Path) -> None:
    spec, env = container(), env_of(container())
    run = {**env, "TURNOUT_ADMIN_TOKEN": "", "TURNOUT_STATE": "memory", "TURNOUT_WORKERS": "1"}
    run["TURNOUT_REPOSITORY"] = str(tmp_path / "models")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turnout", "serve", *spec["args"],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **run},
    )  # fmt: skip
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 2
    assert "TURNOUT_ADMIN_TOKEN" in err.decode()
