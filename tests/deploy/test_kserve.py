"""turnout as a KServe runtime (``deploy/kserve/``): valid to KServe, and true to turnout serve.

Each manifest is built into the KServe SDK's own API models, field by field
(the Kubernetes client's models for the pod parts), so a misspelt or
misplaced field, a wrong type or a missing required field fails. Then the
runtime's container is run as the kubelet would run it for the example
InferenceService, minus the image: ``turnout serve`` with its args and
environment, on a model directory laid out as KServe's storage initializer
leaves ``/mnt/models``, and asked through the KServe SDK's clients.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import joblib  # type: ignore[import-untyped]
import kserve
import kubernetes.client
import numpy as np
import pytest
import yaml
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

from services import free_port
from support import answers
from turnout.cli import build_parser
from turnout.serve_environment import SERVE_ENVIRONMENT

KSERVE = Path(__file__).parents[2] / "deploy" / "kserve"
LIST = re.compile(r"[lL]ist\[(.+)\]")
MAPPING = re.compile(r"(?:dict\(|Dict\[)str, (.+)[)\]]")
PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (float, int),
    "object": (str, int, float, bool, dict, list),
}


def build(type_name: str, value: Any, where: str = "") -> Any:
    """Return ``value`` (YAML) built into the SDK model ``type_name``; AssertionError if not one."""
    # The KServe SDK writes list[X] and dict(str, X); the Kubernetes client List[X], Dict[str, X].
    if listed := LIST.fullmatch(type_name):
        assert isinstance(value, list), f"{where}: expected a list, got {value!r}"
        return [build(listed[1], v, f"{where}[{i}]") for i, v in enumerate(value)]
    if mapped := MAPPING.fullmatch(type_name):
        assert isinstance(value, dict), f"{where}: expected a mapping, got {value!r}"
        return {k: build(mapped[1], v, f"{where}.{k}") for k, v in value.items()}
    if type_name in PRIMITIVES:
        kinds = PRIMITIVES[type_name]
        # YAML's true is no int, though Python's is.
        fits = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        assert fits, f"{where}: {value!r} is not a {type_name}"
        return value
    model = getattr(kserve, type_name, None) or getattr(kubernetes.client, type_name)
    assert isinstance(value, dict), f"{where}: expected a {type_name}, got {value!r}"
    fields = {key: attribute for attribute, key in model.attribute_map.items()}
    unknown = set(value) - set(fields)
    assert not unknown, f"{where}: {type_name} has no field {sorted(unknown)}"
    arguments = {
        fields[key]: build(model.openapi_types[fields[key]], v, f"{where}.{key}")
        for key, v in value.items()
    }
    return model(**arguments)  # a required field that is missing raises ValueError


def manifest(name: str) -> dict[str, Any]:
    """The one document of ``deploy/kserve/<name>.yaml``."""
    document: dict[str, Any] = yaml.safe_load((KSERVE / f"{name}.yaml").read_text())
    return document


def runtime() -> dict[str, Any]:
    """The ClusterServingRuntime."""
    return manifest("cluster-serving-runtime")


def inference_service() -> dict[str, Any]:
    """The example InferenceService."""
    return manifest("inference-service")


def container() -> dict[str, Any]:
    """The runtime's one container."""
    (only,) = runtime()["spec"]["containers"]
    return only  # type: ignore[no-any-return]


def env_of(spec: dict[str, Any]) -> dict[str, str]:
    """The container's environment."""
    return {e["name"]: e["value"] for e in spec["env"]}


@pytest.mark.parametrize(
    ("name", "api_version", "model"),
    [
        ("cluster-serving-runtime", "v1alpha1", "V1alpha1ClusterServingRuntime"),
        ("inference-service", "v1beta1", "V1beta1InferenceService"),
    ],
)
def test_each_manifest_is_a_valid_kserve_object(name: str, api_version: str, model: str) -> None:
    document = manifest(name)
    assert document["apiVersion"] == f"serving.kserve.io/{api_version}"
    assert model.endswith(document["kind"])
    build(model, document, name)


def test_a_misspelt_field_fails_the_check() -> None:
    document = runtime()
    document["spec"]["protocolVersion"] = document["spec"].pop("protocolVersions")
    with pytest.raises(AssertionError, match="has no field"):
        build("V1alpha1ClusterServingRuntime", document)
    document = runtime()
    del document["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match="name"):
        build("V1alpha1ClusterServingRuntime", document)


def test_the_runtime_serves_both_protocols_for_onnx_and_sklearn() -> None:
    spec = runtime()["spec"]
    assert set(spec["protocolVersions"]) == {"v1", "v2"}
    assert {f["name"] for f in spec["supportedModelFormats"]} == {"onnx", "sklearn"}
    predictor = inference_service()["spec"]["predictor"]
    assert predictor["model"]["runtime"] == runtime()["metadata"]["name"]
    assert predictor["model"]["modelFormat"]["name"] in {"onnx", "sklearn"}
    assert predictor["model"]["protocolVersion"] in spec["protocolVersions"]
    # KServe's canary, not turnout's: the runtime serves no admin API to run one.
    assert 0 < predictor["canaryTrafficPercent"] < 100
    assert "TURNOUT_ADMIN_TOKEN" not in env_of(container())


def test_the_container_is_configured_only_with_what_turnout_serve_reads() -> None:
    spec, env = container(), env_of(container())
    assert spec["name"] == "kserve-container"  # the name KServe merges the predictor into
    assert set(env) <= set(SERVE_ENVIRONMENT), set(env) - set(SERVE_ENVIRONMENT)
    name = inference_service()["metadata"]["name"]
    as_started = [a.replace("{{.Name}}", name) for a in spec["args"]]  # KServe's template
    (served,) = build_parser().parse_args(["serve", *as_started]).model
    assert (served.name, str(served.path)) == (name, "/mnt/models")
    (port,) = spec["ports"]
    assert port["containerPort"] == int(env["TURNOUT_PORT"]) == 8080  # KServe's own default
    assert spec["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": 8080}
    annotations = runtime()["spec"]["annotations"]
    assert annotations["prometheus.kserve.io/port"] == env["TURNOUT_PORT"]
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert {"limits", "requests"} <= set(spec["resources"])


def test_the_runtime_is_documented_with_its_canary_choice() -> None:
    guide = (KSERVE.parents[1] / "docs" / "deploy.md").read_text()
    assert "deploy/kserve/cluster-serving-runtime.yaml" in guide
    assert "canaryTrafficPercent" in guide


async def test_the_runtime_serves_the_inference_services_model_to_kserve_clients(
    tmp_path: Path, binary_model: Any, binary_data: Any
) -> None:
    spec, env = container(), env_of(container())
    name = inference_service()["metadata"]["name"]
    mnt_models = tmp_path / "mnt" / "models"  # as the storage initializer leaves it
    mnt_models.mkdir(parents=True)
    joblib.dump(binary_model, mnt_models / "model.joblib")
    port = free_port()
    args = [
        a.replace("{{.Name}}", name).replace("/mnt/models", str(mnt_models)) for a in spec["args"]
    ]
    run = {**env, "TURNOUT_HOST": "127.0.0.1", "TURNOUT_PORT": str(port)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "turnout", "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **run},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    rows = binary_data.X_test.iloc[:4].to_numpy()
    expected = binary_model.predict_proba(binary_data.X_test.iloc[:4])[:, 1]
    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
    v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    try:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            await answers(session, base + spec["readinessProbe"]["httpGet"]["path"])
            async with session.get(f"{base}/metrics") as response:
                assert response.status == 200
        assert await v1.is_model_ready(base, name)
        answer = await v1.infer(base, {"instances": rows.tolist()}, model_name=name)
        assert np.allclose(answer["predictions"], expected, atol=1e-5)
        assert await v2.is_model_ready(base, name)
        tensor = InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows.astype(np.float32), binary_data=False)
        response = await v2.infer(base, InferRequest(name, infer_inputs=[tensor]), model_name=name)
        outputs = {output.name: output.as_numpy() for output in response.outputs}
        assert np.allclose(outputs["probabilities"][:, 1], expected, atol=1e-5)
    finally:
        await v1.close()
        await v2.close()
        if process.returncode is None:
            process.terminate()
        assert await asyncio.wait_for(process.wait(), 30) == 0
