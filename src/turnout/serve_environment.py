"""The environment variables ``turnout serve`` reads: one per option a container sets.

A container image configures ``turnout serve`` from its environment
(Kubernetes ``env:``, ``docker run -e``); each variable stands for one
option and is its default, so a flag on the command line still wins.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SERVE_ENVIRONMENT", "env_default", "env_flag"]

# Every TURNOUT_* variable `turnout serve` reads, and the option it is the default of.
SERVE_ENVIRONMENT: Mapping[str, str] = {
    "TURNOUT_HOST": "--host",
    "TURNOUT_PORT": "--port",
    "TURNOUT_REPOSITORY": "--repository",
    "TURNOUT_STATE": "--state",
    "TURNOUT_ARTIFACTS": "--artifacts",
    "TURNOUT_WORKERS": "--workers",
    "TURNOUT_SHUTDOWN_TIMEOUT": "--shutdown-timeout",
    "TURNOUT_GRPC_PORT": "--grpc-port",
    "TURNOUT_ALLOW_REMOTE": "--allow-remote",
    "TURNOUT_ALLOW_PICKLE": "--allow-pickle",
    "TURNOUT_ADMIN_TOKEN": "--admin-token",
    "TURNOUT_ADMIN_HOST": "--admin-host",
    "TURNOUT_ADMIN_PORT": "--admin-port",
}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def env_default(variable: str, default: str | None) -> str | None:
    """Return the variable's value, or ``default`` when it is unset or empty."""
    assert variable in SERVE_ENVIRONMENT, variable
    return os.environ.get(variable) or default


def env_flag(variable: str) -> bool:
    """Return a yes/no variable's value (1, true, yes, on; or 0, false, no, off, unset).

    ValueError for anything else: a typo must not silently mean "no".
    """
    assert variable in SERVE_ENVIRONMENT, variable
    text = os.environ.get(variable, "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{variable} must be 1/true/yes/on or 0/false/no/off, got {text!r}")
