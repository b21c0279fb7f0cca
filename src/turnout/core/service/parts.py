"""What a ModelServer's collaborators share: its state, and the operations they call back.

:class:`~turnout.core.service.server.ModelServer` is composed of
collaborators (canary and blue-green operations, restore, mirroring), each a
class of its own module. They are handed the server's :class:`ServerParts`
and the server itself typed as :class:`ServerCalls`, so that none of them
imports the server's module: the server imports them, never the reverse.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from turnout.core.clock import Clock
from turnout.core.deployments.registry import Deployment, ModelRegistry
from turnout.core.execution.metrics import MetricsTotals
from turnout.core.resilience.fallback import Fallback
from turnout.core.routing.canary_controller import RolloutController
from turnout.core.routing.config import RoutingConfig, RoutingContext
from turnout.core.routing.router import Router
from turnout.core.service.plugins import EventEmitter
from turnout.core.state.artifacts import ArtifactStore
from turnout.core.state.write_queue import StoreWriter

__all__ = ["ServerCalls", "ServerParts"]


@dataclass(frozen=True)
class ServerParts:
    """One server's state, shared with its collaborators (the objects, not copies)."""

    clock: Clock
    events: EventEmitter
    registry: ModelRegistry
    router: Router
    rollouts: RolloutController
    fallbacks: dict[str, Fallback]
    store: StoreWriter | None
    artifacts: ArtifactStore | None = None  # where deployed ONNX is shared by digest


class ServerCalls(Protocol):
    """The server operations its collaborators call: public ones, and the server's own steps.

    The underscored ones are the server's private steps (activate, route,
    store), which only its collaborators share; ModelServer is the one
    implementation.
    """

    def _set_active(self, model_id: str, version: str) -> None: ...

    def _apply_routing(self, model_id: str, config: RoutingConfig, reason: str = "") -> None: ...

    def _refresh_routing(self, model_id: str, *, keep_unaffected: bool = True) -> None: ...

    def _context(self, model_id: str) -> RoutingContext: ...

    def _persist(self, model_id: str) -> None: ...

    def _check_open(self) -> None: ...

    def _control_available(self) -> bool: ...

    def _leads(self) -> bool: ...

    def traffic_totals(self, model_id: str, version: str) -> MetricsTotals: ...

    def _judge_rollouts(self) -> None: ...

    async def refresh_outcomes(self, model_id: str) -> None: ...

    async def _tend_repository(self) -> None: ...

    def _as_controller(self) -> AbstractContextManager[None]: ...

    async def _flush_changes(self) -> None: ...

    async def predict(self, *args: Any, **kwargs: Any) -> np.ndarray[Any, Any]: ...

    async def set_routing(self, model_id: str, config: RoutingConfig) -> None: ...

    async def deploy_model(self, *args: Any, **kwargs: Any) -> Deployment: ...

    async def retire_model(self, model_id: str, version: str) -> None: ...
