"""A model's live state as the repository stores it: what model.json says, and what it names.

The server's repository writer asks for it each time it writes a model's
state (``turnout.core.state.write_queue``).
"""

from __future__ import annotations

from collections.abc import Mapping

from turnout.core.deployments.registry import ModelRegistry
from turnout.core.resilience.fallback import Fallback
from turnout.core.routing.router import Router
from turnout.core.state.repository_records import ModelRecord, fallback_to_dict

__all__ = ["model_record"]


def model_record(
    registry: ModelRegistry, router: Router, fallbacks: Mapping[str, Fallback], model_id: str
) -> ModelRecord | None:
    """Return the model's live state as a record (None once it has no versions)."""
    if not registry.contains_model(model_id):
        return None
    active = registry.active.get(model_id)
    routing = router.config(model_id).to_dict()
    fallback = fallbacks.get(model_id)
    versions = set(registry.versions(model_id))
    # Any deployed version the routing params mention (a plugin's strategy may keep
    # them anywhere) must be stored before this state is, as must active and fallback.
    named = _strings(routing["params"]) & versions
    named |= {v for v in (active, fallback.version if fallback else None) if v is not None}
    return ModelRecord(
        model_id=model_id,
        active=active,
        routing=routing,
        fallback=fallback_to_dict(fallback),
        named=frozenset(named),
    )


def _strings(data: object) -> set[str]:
    """Every string in plain data (dicts, lists), keys included."""
    if isinstance(data, str):
        return {data}
    items: list[object] = []
    if isinstance(data, Mapping):
        items = [*data.keys(), *data.values()]
    elif isinstance(data, list | tuple):
        items = list(data)
    found: set[str] = set()
    for item in items:
        found |= _strings(item)
    return found
