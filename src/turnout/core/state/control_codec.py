"""ModelState as JSON, for control states kept outside the process (Redis, SQLite).

The revision is not in the JSON: each store keeps it beside the body, where
its compare-and-set can read it without parsing.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from turnout.core.routing.canary_controller import RolloutEvent
from turnout.core.routing.config import RoutingConfig
from turnout.core.state.control import ModelState, VersionEntry
from turnout.core.state.repository_records import fallback_from_dict, fallback_to_dict

__all__ = ["decode_state", "encode_state"]


def encode_state(state: ModelState) -> str:
    """Return ``state`` (all but its revision) as a JSON document."""
    return json.dumps(
        {
            "versions": [
                {
                    "version": e.version,
                    "digest": e.digest,
                    "metadata": dict(e.metadata),
                    "options": dict(e.options),
                }
                for e in state.versions.values()
            ],
            "active": state.active,
            "routing": state.routing.to_dict(),
            "fallback": fallback_to_dict(state.fallback),
            "step_started": None if state.step_started is None else state.step_started.isoformat(),
            "history": [
                {
                    "at": e.at.isoformat(),
                    "candidate": e.candidate,
                    "step": e.step,
                    "weight": e.weight,
                    "event": e.event,
                    "reason": e.reason,
                }
                for e in state.history
            ],
        },
        separators=(",", ":"),
        allow_nan=False,
    )


def decode_state(model_id: str, revision: int, text: str | bytes) -> ModelState:
    """Return the ModelState that ``encode_state`` wrote, at ``revision``."""
    data: dict[str, Any] = json.loads(text)
    started = data.get("step_started")
    return ModelState(
        model_id,
        revision,
        versions={
            e["version"]: VersionEntry(e["version"], e["digest"], e["metadata"], e["options"])
            for e in data["versions"]
        },
        active=data["active"],
        routing=RoutingConfig.from_dict(data["routing"]),
        fallback=fallback_from_dict(data["fallback"]),
        step_started=None if started is None else datetime.fromisoformat(started),
        history=tuple(
            RolloutEvent(
                datetime.fromisoformat(e["at"]),
                e["candidate"],
                e["step"],
                e["weight"],
                e["event"],
                e["reason"],
            )
            for e in data["history"]
        ),
    )
