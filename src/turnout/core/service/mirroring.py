"""Shadow traffic: sending copies of requests to mirror versions and comparing the answers.

A collaborator of :class:`~turnout.core.service.server.ModelServer`, like
:mod:`turnout.core.service.rollout_operations`. Copies are queued from a ``call_soon`` after
their primary and followed by done-callbacks: a task per mirrored request
cost more than the mirror's own batching (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio

import numpy as np

from turnout.core.deployments.registry import Deployment
from turnout.core.errors import ServiceUnavailableError, TurnoutError
from turnout.core.execution.batching import BatchSlice
from turnout.core.execution.outputs import BatchOutput
from turnout.core.resilience.breaker import Permit
from turnout.core.routing.shadow_stats import ShadowRecorder, compare_outputs
from turnout.core.service.parts import ServerParts

__all__ = ["SHADOW_BACKLOG_BATCHES", "Mirror"]

# Full batches' worth of mirrored rows a shadow version may have waiting.
SHADOW_BACKLOG_BATCHES = 4


class Mirror:
    """Sends copies of requests to a server's shadow versions and compares their answers."""

    def __init__(self, parts: ServerParts) -> None:
        self._registry = parts.registry
        self._router = parts.router
        self._clock = parts.clock
        self._events = parts.events

    def send(
        self,
        model_id: str,
        primary: Deployment,
        version: str,
        inputs: object,
        primary_result: asyncio.Future[BatchSlice[BatchOutput]],
    ) -> None:
        """Send a copy of a request to a shadow version, followed by callbacks, not a task.

        A task per mirrored request cost more than the mirror's own batching.
        """
        if primary_result.done() and (
            primary_result.cancelled() or primary_result.exception() is not None
        ):
            return  # the primary was refused: its copy would only add load
        recorder = self._router.traffic(model_id).shadow(primary.version, version)
        started = self._clock.now()
        shadow: Deployment | None = None
        permit: Permit | None = None
        try:
            shadow = self._registry.get(model_id, version)
            encoded = shadow.schema.encode(inputs)
            if isinstance(inputs, np.ndarray) and np.shares_memory(encoded, inputs):
                # The caller may reuse its array once the primary answers.
                encoded = encoded.copy()
            batcher = shadow.batcher
            if batcher.queued_rows + len(encoded) > SHADOW_BACKLOG_BATCHES * (
                batcher.config.max_batch_rows
            ):
                # A shadow that cannot keep up sheds copies rather than build a backlog
                # of seconds: its answers would be stale and its queue memory the server's.
                recorder.dropped += 1
                return
            permit = shadow.breaker.admit()
            copy = batcher.enqueue(encoded, started=started)
        except ServiceUnavailableError:
            recorder.dropped += 1
            self._release(shadow, permit)
            return
        except TurnoutError:
            recorder.errors += 1
            self._release(shadow, permit)
            return

        breaker = shadow.breaker

        def shadow_done(copy: asyncio.Future[BatchSlice[BatchOutput]]) -> None:
            breaker.release(permit)
            if copy.cancelled():
                recorder.dropped += 1
                return
            error = copy.exception()
            if error is not None:
                if isinstance(error, ServiceUnavailableError):
                    recorder.dropped += 1
                else:
                    recorder.errors += 1
                return
            latency = self._clock.now() - started
            primary_result.add_done_callback(
                lambda mine: self._compare_shadow(
                    model_id, primary, version, recorder, mine, copy.result(), latency
                )
            )

        copy.add_done_callback(shadow_done)

    @staticmethod
    def _release(deployment: Deployment | None, permit: Permit | None) -> None:
        if deployment is not None and permit is not None:
            deployment.breaker.release(permit)

    def _compare_shadow(
        self,
        model_id: str,
        primary: Deployment,
        version: str,
        recorder: ShadowRecorder,
        mine_result: asyncio.Future[BatchSlice[BatchOutput]],
        piece: BatchSlice[BatchOutput],
        latency: float,
    ) -> None:
        if mine_result.cancelled() or mine_result.exception() is not None:
            return  # the primary failed or its caller went away: nothing to compare with
        mine = mine_result.result()
        a, b = mine.result, piece.result
        ra, rb = slice(mine.start, mine.stop), slice(piece.start, piece.stop)
        total, largest, agreed = compare_outputs(
            a.primary[ra],
            b.primary[rb],
            None if a.labels is None else a.labels[ra],
            None if b.labels is None else b.labels[rb],
        )
        rows = mine.stop - mine.start
        recorder.record(rows, total, largest, agreed, latency)
        if self._events.has_listeners("shadow_compared"):
            self._events.emit(
                "shadow_compared",
                model_id=model_id,
                primary=primary.version,
                shadow=version,
                difference=total / rows,
                agreed=None if agreed is None else agreed == rows,
            )
