"""The requests the HTTP benchmark sends: four kinds, each a pool of distinct bodies.

* ``v2-json-1``: Open Inference Protocol, one FP32 ``[1, 20]`` tensor as JSON;
* ``v2-json-32``: the same with 32 rows;
* ``v2-binary-1``: one row as raw bytes after a JSON header (the binary
  tensor data extension);
* ``v1-1``: KServe V1, ``{"instances": [[...20 values]]}``.

Every server answers with the same content: a label and class probabilities
per row. MLServer's sklearn runtime answers with labels only unless asked, so
its requests name both outputs; it speaks neither V1 nor the binary extension.
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
    protocol: str  # "v2" or "v1"
    rows: int
    binary: bool = False


KINDS: dict[str, RequestKind] = {
    kind.name: kind
    for kind in (
        RequestKind("v2-json-1", "v2", 1),
        RequestKind("v2-json-32", "v2", 32),
        RequestKind("v2-binary-1", "v2", 1, binary=True),
        RequestKind("v1-1", "v1", 1),
    )
}

POOL = 64  # distinct bodies per kind: real clients do not send one body forever


@dataclass(frozen=True)
class Payload:
    """What a load generator sends: one path, and requests (headers, body) to cycle through."""

    path: str
    requests: tuple[tuple[dict[str, str], bytes], ...]


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
    requests = []
    for i in range(POOL):
        start = (i * kind.rows) % (len(rows) - kind.rows + 1)
        batch = rows[start : start + kind.rows]
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


def _v1_body(batch: np.ndarray[Any, Any], key: str | None) -> bytes:
    instances = [[float(x) for x in row] for row in batch]
    return json.dumps({"instances": instances, **_parameters(key)}).encode()
