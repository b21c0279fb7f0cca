"""What the admin API answers: turnout's records (dataclasses, enums, datetimes) as JSON."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from turnout.core.resilience.fallback import Fallback
from turnout.core.service.server import ModelServer

__all__ = ["fallback_json", "model_view", "to_json"]


def to_json(value: Any) -> Any:
    """Return ``value`` as plain JSON data; NaN and infinities become null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.name.startswith("_")
        }
    if isinstance(value, enum.Enum):
        return to_json(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, np.generic):
        return to_json(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_json(item) for item in value]
    return value


def model_view(server: ModelServer, model: str) -> dict[str, Any]:
    """What the admin API says about one model: active version, routing, fallback, versions."""
    versions = server.get_all_models_status().get(model)
    routing = server.get_routing(model)  # ModelNotFoundError for an unknown model
    return {
        "name": model,
        "active": server.active_models.get(model),
        "routing": routing.to_dict(),
        "fallback": fallback_json(server.get_fallback(model)),
        "versions": versions or {},
    }


def fallback_json(fallback: Fallback | None) -> dict[str, Any] | None:
    """A fallback as the admin API shows it: ``{"version": v}``, ``{"value": x}`` or null."""
    if fallback is None:
        return None
    if fallback.version is not None:
        return {"version": fallback.version}
    return {"value": fallback.value}
