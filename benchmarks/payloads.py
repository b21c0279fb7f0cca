"""The requests the HTTP benchmark sends: five kinds, each a pool of distinct bodies.

* ``v2-json-1``: Open Inference Protocol, one FP32 ``[1, 20]`` tensor as JSON;
* ``v2-json-32``: the same with 32 rows;
* ``v2-binary-1``: one row as raw bytes after a JSON header (the binary
  tensor data extension);
* ``v1-1``: KServe V1, ``{"instances": [[...20 values]]}``;
* ``grpc-raw-1``: the Open Inference Protocol over gRPC, a serialized
  ``ModelInferRequest`` with the row in ``raw_input_contents``, as
  tritonclient sends it (``benchmarks.grpcload`` sends it).

Every server answers with the same content: a label and class probabilities
per row. MLServer's sklearn runtime answers with labels only unless asked, so
its requests name both outputs; it speaks neither V1 nor the binary extension.
Which servers take gRPC is the harness's to say (``ServerSpec.grpc``), not
the flavour's: the ceiling and this tree's turnout servers do, ``--baseline``
servers do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["KINDS", "Payload", "RequestKind", "build_payload"]


@dataclass(frozen=True)
class RequestKind:
    """One kind of request: its protocol and rows per request."""

    name: str
    protocol: str  # "v2", "v1" or "grpc"
    rows: int
    binary: bool = False

    @property
    def grpc(self) -> bool:
        """Whether it is sent over gRPC rather than HTTP."""
        return self.protocol == "grpc"


KINDS: dict[str, RequestKind] = {
    kind.name: kind
    for kind in (
        RequestKind("v2-json-1", "v2", 1),
        RequestKind("v2-json-32", "v2", 32),
        RequestKind("v2-binary-1", "v2", 1, binary=True),
        RequestKind("v1-1", "v1", 1),
        RequestKind("grpc-raw-1", "grpc", 1, binary=True),
    )
}

POOL = 64  # distinct bodies per kind: real clients do not send one body forever


@dataclass(frozen=True)
class Payload:
    """What a load generator sends: one path, and requests (headers, body) to cycle through.

    Over gRPC the path is the method's and each body a serialized message.
    """

    path: str
    requests: tuple[tuple[dict[str, str], bytes], ...]
    grpc: bool = False  # sent over gRPC, to a server's gRPC port


def build_payload(
    kind: RequestKind,
    model: str,
    rows: np.ndarray[Any, Any],
    *,
    flavour: str = "turnout",
    keys: bool = False,
) -> Payload | None:
    """Return the payload of ``kind`` for ``model``, or None if ``flavour`` cannot take it.

    ``flavour`` is "turnout" (also the ceiling's) or "mlserver"; ``keys`` adds a
    distinct routing key per body (``parameters.key``) for sticky routing.
    """
    if flavour == "mlserver" and (kind.protocol != "v2" or kind.binary):
        return None
    if kind.grpc:
        return _grpc_payload(kind, model, rows, keys)
    requests = []
    for i, batch in enumerate(_batches(rows, kind.rows)):
        key = f"user-{i:04d}" if keys else None
        if kind.protocol == "v1":
            requests.append((_JSON, _v1_body(batch, key)))
        elif kind.binary:
            requests.append(_v2_binary_request(batch, key))
        else:
            requests.append((_JSON, _v2_json_body(batch, key, flavour)))
    if kind.protocol == "v1":
        return Payload(f"/v1/models/{model}:predict", tuple(requests))
    return Payload(f"/v2/models/{model}/infer", tuple(requests))


_JSON = {"Content-Type": "application/json"}


def _batches(rows: np.ndarray[Any, Any], size: int) -> list[np.ndarray[Any, Any]]:
    """Return the ``POOL`` batches of ``size`` rows the bodies are made of."""
    starts = ((i * size) % (len(rows) - size + 1) for i in range(POOL))
    return [rows[start : start + size] for start in starts]


def _values(batch: np.ndarray[Any, Any]) -> list[float]:
    return [float(x) for x in batch.reshape(-1)]


def _parameters(key: str | None) -> dict[str, Any]:
    return {} if key is None else {"parameters": {"key": key}}


def _v2_json_body(batch: np.ndarray[Any, Any], key: str | None, flavour: str) -> bytes:
    tensor = {"name": "input", "shape": list(batch.shape), "datatype": "FP32"}
    body: dict[str, Any] = {"inputs": [{**tensor, "data": _values(batch)}], **_parameters(key)}
    if flavour == "mlserver":
        body["outputs"] = [{"name": "predict"}, {"name": "predict_proba"}]
    return json.dumps(body).encode()


def _v2_binary_request(
    batch: np.ndarray[Any, Any], key: str | None
) -> tuple[dict[str, str], bytes]:
    raw = np.ascontiguousarray(batch, dtype="<f4").tobytes()
    tensor = {
        "name": "input",
        "shape": list(batch.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"inputs": [tensor], **_parameters(key)}).encode()
    headers = {
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": str(len(header)),
    }
    return headers, header + raw


def _grpc_payload(kind: RequestKind, model: str, rows: np.ndarray[Any, Any], keys: bool) -> Payload:
    """Return serialized ModelInferRequests: serialized once, so the client only sends bytes."""
    from turnout.web.rpc.messages import SERVICE, ModelInferRequest

    requests: list[tuple[dict[str, str], bytes]] = []
    for i, batch in enumerate(_batches(rows, kind.rows)):
        request = ModelInferRequest(model_name=model)
        request.inputs.add(name="input", datatype="FP32", shape=list(batch.shape))
        # The values go raw, beside the tensors, as tritonclient sends them.
        request.raw_input_contents.append(np.ascontiguousarray(batch, dtype="<f4").tobytes())
        if keys:
            request.parameters["key"].string_param = f"user-{i:04d}"
        requests.append(({}, request.SerializeToString()))
    return Payload(f"/{SERVICE}/ModelInfer", tuple(requests), grpc=True)


def _v1_body(batch: np.ndarray[Any, Any], key: str | None) -> bytes:
    instances = [[float(x) for x in row] for row in batch]
    return json.dumps({"instances": instances, **_parameters(key)}).encode()
