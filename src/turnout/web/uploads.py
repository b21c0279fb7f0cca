"""Reading a model upload: base64 ONNX bytes and the ``deploy_model`` options beside them.

Only ONNX crosses the network. The bytes are handed to the server as bytes,
never as a path, so a request cannot name a file to load; nothing sent is
ever unpickled. Instead of bytes an upload may name a model in the server's
own MLflow registry (``models:/name/3``, ``models:/name@alias``,
``runs:/<id>/model``), which is deployed only from its ``onnx`` flavor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from turnout.core.errors import InvalidConfigError
from turnout.core.execution.batching import BatchingConfig
from turnout.core.resilience.breaker import BreakerConfig
from turnout.web.body import bad_request, get_list, get_object, get_string, type_name

__all__ = [
    "OPTION_KEYS",
    "Upload",
    "decode_onnx",
    "read_mlflow_uri",
    "read_number",
    "read_options",
    "read_upload",
]

# ONNX files start with a protobuf field tag; a pickle starts with 0x80 (protocol 2+).
# Refusing the pickle opcode up front gives a clearer error than the ONNX parser would.
_PICKLE_START = b"\x80"


# A registry model or a run of the configured tracking server: no "//authority" (which
# would name another registry, e.g. models://profile@databricks/...), no scheme else.
_MLFLOW_URI = re.compile(r"(?:models:/[A-Za-z0-9_][^/]*(?:/[^/]+)?|runs:/[0-9a-fA-F]+/[\w./-]+)")
_MAX_URI_LENGTH = 1000


@dataclass(frozen=True)
class Upload:
    """A model version sent over HTTP: its ONNX bytes or MLflow URI, and how to deploy it."""

    source: bytes | str
    options: Mapping[str, Any]

    @property
    def sha256(self) -> str | None:
        """The hex SHA-256 of uploaded ONNX bytes, to check against the client's copy."""
        if isinstance(self.source, str):
            return None
        return hashlib.sha256(self.source).hexdigest()


def decode_onnx(text: object, where: str) -> bytes:
    """Return the ONNX bytes base64-encoded in ``text``; a 400 naming ``where`` if they are not."""
    if not isinstance(text, str):
        raise bad_request(f"{where} must be a base64 string, not {type_name(text)}", where)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where} is not valid base64", where) from None
    if not data:
        raise bad_request(f"{where} is empty: send the bytes of a .onnx file", where)
    if data.startswith(_PICKLE_START):
        raise bad_request(
            f"{where} looks like a pickle; only ONNX models are accepted over HTTP"
            " (convert it first: turnout deploy does so locally)",
            where,
        )
    return data


def _flag(body: Mapping[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false, not {type_name(value)}", key)
    return value


def read_number(value: object, where: str) -> float:
    """Return a JSON number as a float; a 400 for anything else, or an int too big for one."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{where} must be a number, not {type_name(value)}", where)
    try:
        return float(value)
    except OverflowError:
        raise bad_request(f"{where} is too large", where) from None


def _config(cls: type[Any], data: Mapping[str, Any], where: str) -> Any:
    """Build a frozen config dataclass from JSON, naming unknown keys and bad values."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise bad_request(
            f"{where} has unknown keys {unknown}; known: {sorted(known)}", f"{where}.{unknown[0]}"
        )
    try:
        return cls(**data)
    except InvalidConfigError as exc:
        raise bad_request(f"{where}: {exc}", where, code="invalid_config") from None
    except (TypeError, ValueError) as exc:
        raise bad_request(f"{where} has a value of the wrong type: {exc}", where) from None


def read_upload(body: Mapping[str, Any]) -> Upload:
    """Read ``{"onnx": base64, "features": [...], "metadata": {...}, ...}`` into an Upload."""
    options = read_options(body, ignore=frozenset({"onnx", "mlflow_uri"}))
    if "mlflow_uri" in body:
        if "onnx" in body:
            raise bad_request("send onnx or mlflow_uri, not both", "mlflow_uri")
        return Upload(read_mlflow_uri(body["mlflow_uri"]), options)
    if "onnx" not in body:
        raise bad_request(
            "onnx is missing: send the .onnx file's bytes in base64 (or an mlflow_uri)", "onnx"
        )
    return Upload(decode_onnx(body["onnx"], "onnx"), options)


def read_mlflow_uri(value: object) -> str:
    """Return ``value`` if it names a model of the configured MLflow server, else a 400."""
    where = "mlflow_uri"
    if not isinstance(value, str):
        raise bad_request(f"{where} must be a string, not {type_name(value)}", where)
    if (
        len(value) > _MAX_URI_LENGTH
        or _MLFLOW_URI.fullmatch(value) is None
        or ".." in value.split("/")
    ):
        raise bad_request(
            f"{where} must be models:/<name>/<version>, models:/<name>@<alias> or"
            " runs:/<run id>/<path>, in the server's own tracking server",
            where,
        )
    return value


def read_options(
    body: Mapping[str, Any], *, ignore: frozenset[str] = frozenset(), where: str = ""
) -> dict[str, Any]:
    """Read the ``deploy_model`` options of an upload; keys in ``ignore`` are the caller's."""
    prefix = f"{where}." if where else ""
    options: dict[str, Any] = {}
    features = get_list(body, "features", prefix + "features", required=False)
    if features is not None:
        if not all(isinstance(name, str) for name in features):
            raise bad_request("features must be a list of strings", prefix + "features")
        options["features"] = features
    metadata = get_object(body, "metadata", prefix + "metadata")
    if metadata is not None:
        options["metadata"] = metadata
    output = get_string(body, "output", prefix + "output", required=False)
    if output is not None:
        options["output"] = output
    for key in ("set_active", "replace", "allow_nan"):
        flag = _flag(body, key)
        if flag is not None:
            options[key] = flag
    for key, cls in (("batching", BatchingConfig), ("breaker", BreakerConfig)):
        config = get_object(body, key, prefix + key)
        if config is not None:
            options[key] = _config(cls, config, prefix + key)
    threshold = body.get("error_threshold")
    if threshold is not None:
        options["error_threshold"] = read_number(threshold, prefix + "error_threshold")
    unknown = sorted(set(body) - OPTION_KEYS - ignore)
    if unknown:
        raise bad_request(
            f"unknown keys {unknown}; deploy options are {sorted(OPTION_KEYS)}",
            prefix + unknown[0],
        )
    return options


OPTION_KEYS = frozenset(
    {
        "features",
        "metadata",
        "output",
        "set_active",
        "replace",
        "allow_nan",
        "batching",
        "breaker",
        "error_threshold",
    }
)
