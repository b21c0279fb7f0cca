"""What the HTTP API says about a deployed model: its versions, readiness, inputs and outputs.

Outputs have fixed names whatever the model: ``label`` and ``probabilities``
for a classifier, ``predictions`` for every model (what
:meth:`ModelServer.predict` returns for its deployment: a regressor's values,
a binary classifier's positive-class probability).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import ModelNotFoundError
from turnout.core.execution.convert import Task
from turnout.core.execution.outputs import OutputMode
from turnout.core.resilience.breaker import BreakerState
from turnout.core.service.server import InferenceResult, ModelServer
from turnout.web.tensors import datatype_of

__all__ = [
    "LABEL",
    "OUTPUT_NAMES",
    "PREDICTIONS",
    "PROBABILITIES",
    "TensorSpec",
    "deployment_in_hand",
    "input_specs",
    "is_ready",
    "is_server_ready",
    "model_versions",
    "output_specs",
    "result_outputs",
]

LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTIONS = "predictions"
OUTPUT_NAMES = (LABEL, PROBABILITIES, PREDICTIONS)


@dataclass(frozen=True)
class TensorSpec:
    """A ``$metadata_tensor``: name, datatype and shape (-1 for a dimension that varies)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        """Return the spec as the protocol's JSON object."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def deployment_in_hand(server: ModelServer, model: str, version: str | None) -> Deployment | None:
    """Return the pinned version, else the active one; None if the model has no active version.

    Raises ModelNotFoundError (or VersionNotFoundError) if the model or the
    pinned version is not deployed at all.
    """
    if version is not None:
        return server.get_deployment(model, version)
    try:
        return server.get_deployment(model)
    except ModelNotFoundError:
        server.get_routing(model)  # raises if the model has no version at all
        return None


def is_ready(server: ModelServer, model: str, version: str | None) -> bool:
    """True if requests to the model (or the pinned version) can be served now."""
    deployment = deployment_in_hand(server, model, version)
    if deployment is None or server.closed:
        return False
    return server.circuit_breaker(model, deployment.version).state is not BreakerState.OPEN


def is_server_ready(server: ModelServer) -> bool:
    """True if the server admits requests and at least one model can serve now.

    A server with no models is not ready: a load balancer must not send it
    traffic it can only answer with 404s. Nor is one still loading versions
    that other servers of its fleet deployed.
    """
    if server.closed or server.unloaded_versions:
        return False
    return any(is_ready(server, model, None) for model in server.active_models)


def model_versions(server: ModelServer, model: str) -> list[str]:
    """Return the model's deployed versions, sorted; raise ModelNotFoundError if none."""
    versions = server.get_all_models_status().get(model)
    if not versions:
        raise ModelNotFoundError(f"Model '{model}' not found", model_id=model)
    return sorted(versions)


def input_specs(deployment: Deployment) -> list[TensorSpec]:
    """Return the input tensors the deployment takes: one [rows, features], or one per column."""
    schema = deployment.schema
    if schema.columns is not None:
        return [TensorSpec(c.name, datatype_of(c.dtype), (-1, 1)) for c in schema.columns]
    name = deployment.loaded.signature.input_name
    return [TensorSpec(name, datatype_of(schema.dtype), (-1, schema.n_features))]


def output_specs(deployment: Deployment) -> list[TensorSpec]:
    """Return the outputs the deployment can answer with, by name."""
    signature = deployment.loaded.signature
    decoder = deployment.decoder
    floats = "FP64" if deployment.schema.dtype == np.float64 else "FP32"
    if decoder.task is Task.REGRESSOR:
        return [TensorSpec(PREDICTIONS, floats, (-1,))]
    classes = signature.classes
    n_classes = len(classes) if classes else -1
    labels = "BYTES" if classes and any(isinstance(c, str) for c in classes) else "INT64"
    has_labels = signature.label_output is not None or signature.score_output is None
    has_scores = signature.score_output is not None
    specs = []
    if has_labels:
        specs.append(TensorSpec(LABEL, labels, (-1,)))
    if has_labels and has_scores:
        specs.append(TensorSpec(PROBABILITIES, floats, (-1, n_classes)))
    if decoder.mode is OutputMode.LABEL or not has_scores:
        specs.append(TensorSpec(PREDICTIONS, labels, (-1,)))
    elif decoder.mode is OutputMode.AUTO and n_classes == 2:
        specs.append(TensorSpec(PREDICTIONS, floats, (-1,)))
    else:
        specs.append(TensorSpec(PREDICTIONS, floats, (-1, n_classes)))
    return specs


def result_outputs(result: InferenceResult) -> dict[str, np.ndarray[Any, Any]]:
    """Return the outputs one answer carries, by name (a fixed fallback value has no labels)."""
    outputs = {LABEL: result.labels, PROBABILITIES: result.probabilities}
    present = {name: array for name, array in outputs.items() if array is not None}
    present[PREDICTIONS] = result.outputs
    return present
