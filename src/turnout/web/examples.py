"""Ready-to-paste ``curl`` commands for querying a running server."""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["admin_example", "curl", "v1_predict_example", "v2_infer_example"]


def curl(url: str, body: Mapping[str, Any] | None = None) -> str:
    """Return a shell-quoted curl command: a GET, or a JSON POST of ``body``."""
    parts = ["curl", "-s"]
    if body is not None:
        parts += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    return shlex.join([*parts, url])


def v1_predict_example(base_url: str, model: str, row: Mapping[str, Any]) -> str:
    """Return a curl command that sends ``row`` to the model's V1 predict endpoint."""
    return curl(f"{base_url}/v1/models/{model}:predict", {"instances": [dict(row)]})


def v2_infer_example(
    base_url: str, model: str, values: Sequence[float], datatype: str, input_name: str
) -> str:
    """Return a curl command that sends one row as a [1, n] tensor to the model's V2 endpoint."""
    tensor = {"name": input_name, "shape": [1, len(values)], "datatype": datatype, "data": values}
    return curl(f"{base_url}/v2/models/{model}/infer", {"inputs": [tensor]})


def admin_example(base_url: str, path: str, token_variable: str | None) -> str:
    """Return a curl command for an admin GET, reading the token from ``$token_variable``."""
    command = curl(f"{base_url}{path}")
    if token_variable is None:
        return command
    # Double quotes, so that the shell expands the variable and the token stays off screen.
    return command.replace("curl -s", f'curl -s -H "Authorization: Bearer ${token_variable}"', 1)
