"""A request's way through a server: route, validate, admit, queue, and the answer it gets.

A collaborator of :class:`~turnout.core.service.server.ModelServer`, whose
``predict`` and ``infer`` call it; the hot path, so it reads the server's
parts (registry, router, fallbacks) directly, and a breaker's refusal turns
into the model's fallback here.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import (
    CircuitOpenError,
    InvalidInputError,
    InvalidNameError,
    OverloadedError,
)
from turnout.core.execution.batching import BatchSlice
from turnout.core.execution.outputs import BatchOutput
from turnout.core.resilience.fallback import Fallback
from turnout.core.service.mirroring import Mirror
from turnout.core.service.parts import ServerParts

__all__ = ["FIXED_VALUE", "InferenceResult", "RequestPath", "positive_number"]

# What outcome feedback records as the server of a fixed fallback value.
FIXED_VALUE = "fallback-value"


@dataclass(frozen=True)
class InferenceResult:
    """The full answer to one request: what served it, and every output it produced.

    ``request_id`` identifies the request to :meth:`ModelServer.record_outcome`.
    ``fallback`` is True when the routed version's breaker was open and the
    model's fallback answered: ``version`` then names the fallback version,
    or, for a fixed fallback value, the version that could not serve.
    """

    model_id: str
    version: str
    outputs: np.ndarray[Any, Any]
    labels: np.ndarray[Any, Any] | None
    probabilities: np.ndarray[Any, Any] | None
    latency_ms: float
    request_id: str
    fallback: bool = False


class RequestPath:
    """Routes, validates, admits and queues a server's requests, and shapes their answers."""

    def __init__(self, parts: ServerParts, mirror: Mirror) -> None:
        self._clock = parts.clock
        self._registry = parts.registry
        self._router = parts.router
        self._fallbacks = parts.fallbacks
        self._mirror = mirror

    async def predict(
        self,
        model_id: str,
        inputs: object,
        version: str | None,
        key: str | None,
        timeout: float | None,
        attributes: Mapping[str, Any] | None,
    ) -> np.ndarray[Any, Any]:
        """Answer one request with its primary outputs (see ModelServer.predict)."""
        _, piece, _ = await self.submit(model_id, inputs, version, key, timeout, attributes)
        primary = piece.result.primary
        if piece.start == 0 and piece.stop == len(primary):
            return primary
        return primary[piece.start : piece.stop]

    async def infer(
        self,
        model_id: str,
        inputs: object,
        version: str | None,
        key: str | None,
        timeout: float | None,
        attributes: Mapping[str, Any] | None,
    ) -> InferenceResult:
        """Answer one request in full (see ModelServer.infer)."""
        started = self._clock.now()
        # Taken before the request runs: the model may be retired meanwhile,
        # and an answered request must still get its result.
        traffic = self._router.traffic(model_id) if isinstance(model_id, str) else None
        deployment, piece, fallback = await self.submit(
            model_id, inputs, version, key, timeout, attributes
        )
        assert traffic is not None
        out, rows = piece.result, slice(piece.start, piece.stop)
        return InferenceResult(
            model_id=model_id,
            version=deployment.version,
            outputs=out.primary[rows],
            labels=None if out.labels is None else out.labels[rows],
            probabilities=None if out.scores is None or out.labels is None else out.scores[rows],
            latency_ms=(self._clock.now() - started) * 1e3,
            # A fixed fallback value is no version's answer: its outcome counts for none.
            request_id=traffic.outcomes.new_request(
                deployment.version if fallback is not Fallback.VALUE else FIXED_VALUE
            ),
            fallback=fallback is not None,
        )

    async def submit(
        self,
        model_id: str,
        inputs: object,
        version: str | None,
        key: str | None,
        timeout: float | None,
        attributes: Mapping[str, Any] | None,
    ) -> tuple[Deployment, BatchSlice[BatchOutput], str | None]:
        """Route, validate, admit and queue one request; return who served, the slice,
        and which kind of fallback served (None, Fallback.VERSION or Fallback.VALUE)."""
        started = self._clock.now()
        if not isinstance(model_id, str) or not (version is None or isinstance(version, str)):
            # Cheaper than check_name per request; a str that is no valid name
            # simply finds no model below.
            raise InvalidNameError("model_id and version must be strings")
        if key is not None and not isinstance(key, str):
            raise InvalidInputError(f"key must be a string, got {type(key).__name__}")
        if attributes is not None and not isinstance(attributes, Mapping):
            raise InvalidInputError("attributes must be a dict")
        if timeout is not None:
            timeout = _check_timeout(timeout)
        if version is None:
            route = self._router.route(model_id, key, attributes or {})
            deployment = self._registry.get(model_id, route.primary)
        else:
            route = None
            deployment = self._registry.get(model_id, version)
        rows = deployment.schema.encode(inputs)
        used_fallback: str | None = None
        try:
            permit = deployment.breaker.admit()
        except CircuitOpenError:
            fallback = self._fallbacks.get(model_id)
            # A request pinned to a version asked for that version's answer only.
            if fallback is None or version is not None or fallback.version == deployment.version:
                raise
            if fallback.version is None:
                return deployment, fallback.constant(len(rows)), Fallback.VALUE
            used_fallback = Fallback.VERSION
            # The fallback version's own breaker decides whether it may serve.
            deployment = self._registry.get(model_id, fallback.version)
            rows = deployment.schema.encode(inputs)
            permit = deployment.breaker.admit()
            route = None
        if timeout is None and deployment.batcher.config.timeout_ms is not None:
            timeout = deployment.batcher.config.timeout_ms / 1e3
        deadline = None if timeout is None else started + timeout
        try:
            if route is not None and route.mirrors:
                primary = deployment.batcher.enqueue(rows, deadline=deadline, started=started)
                loop = asyncio.get_running_loop()
                for mirror in route.mirrors:
                    # Queued after the primary, from the next loop turn: never before it.
                    loop.call_soon(self._mirror.send, model_id, deployment, mirror, inputs, primary)
                piece = await primary
            else:
                piece = await deployment.batcher.submit(rows, deadline=deadline, started=started)
        except OverloadedError:
            deployment.metrics.record_shed()
            raise
        finally:
            deployment.breaker.release(permit)
        return deployment, piece, used_fallback


def positive_number(value: object) -> bool:
    """True if ``value`` is a finite int or float above zero (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value) and value > 0
    except OverflowError:  # an int too large for a float
        return False


def _check_timeout(timeout: object) -> float:
    if not positive_number(timeout):
        raise InvalidInputError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)  # type: ignore[arg-type]
