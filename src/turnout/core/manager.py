"""ModelServingManager: the synchronous facade, for code written against the serving guide.

A :class:`ModelServer` runs on an event loop in a daemon thread; every method
here hands its call to that loop through an anyio blocking portal and waits.
Many threads may call :meth:`ModelServingManager.predict` at once: their
requests meet in the same batchers and run together.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import anyio
import numpy as np
from anyio.from_thread import BlockingPortal

from turnout.core.batching import BatchingConfig
from turnout.core.errors import InvalidConfigError, ServerClosedError, TurnoutError
from turnout.core.health import HealthReport
from turnout.core.outputs import OutputMode
from turnout.core.registry import HealthCheckFn
from turnout.core.server import InferenceResult, ModelServer

__all__ = ["ModelServingManager"]

logger = logging.getLogger("turnout")

T = TypeVar("T")


class _LoopThread:
    """An event loop in a daemon thread, reachable through a blocking portal.

    A daemon thread rather than anyio's ``start_blocking_portal``: that one
    lives in a ThreadPoolExecutor, which the interpreter joins at exit, so a
    manager nobody closed would hang the program on its way out.
    """

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="turnout-loop", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            anyio.run(self._serve)
        except BaseException as exc:  # surfaced to the constructing thread
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with BlockingPortal() as portal:
            self._portal = portal
            self._ready.set()
            await portal.sleep_until_stopped()

    def call(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``await func(*args)`` on the loop and return its result."""
        if self._stopping:
            # Otherwise the caller would get anyio's "This portal is not running".
            raise ServerClosedError("the manager is closed")
        assert self._portal is not None
        result: T = self._portal.call(func, *args)
        return result

    def stop(self) -> None:
        """Stop the loop and wait for its thread to end."""
        self._stopping = True
        if self._portal is not None and self._thread.is_alive():
            self._portal.call(self._portal.stop)
        self._thread.join()


def _shutdown(loop: _LoopThread, server: ModelServer) -> None:
    try:
        loop.call(server.close)
    finally:
        loop.stop()


class ModelServingManager:
    """Deploy, route and serve models from synchronous code; the guide's API."""

    def __init__(
        self,
        enable_mlflow: bool = False,
        mlflow_experiment: str | None = None,
        error_threshold: float = 0.5,
        mock_mode: bool = False,
        *,
        batching: BatchingConfig | None = None,
    ) -> None:
        if enable_mlflow and importlib.util.find_spec("mlflow") is None:
            raise InvalidConfigError(
                "enable_mlflow=True needs MLflow: pip install 'turnout[mlflow]'"
            )
        if enable_mlflow:
            logger.warning(
                "MLflow tracking of deployments and serving metrics is not available in"
                " turnout %s; serving goes on without it",
                "0.1",
            )
        self.enable_mlflow = enable_mlflow
        self.mlflow_experiment = mlflow_experiment
        self.error_threshold = error_threshold
        self.mock_mode = mock_mode
        self.server = ModelServer(
            batching=batching, error_threshold=error_threshold, mock_mode=mock_mode
        )
        self._loop = _LoopThread()
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self.server)

    def deploy_model(
        self,
        model_id: str,
        version: str,
        model_instance: object,
        set_active: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        error_threshold: float | None = None,
        health_check_fn: HealthCheckFn | None = None,
        features: Sequence[str] | None = None,
        output: OutputMode | str | None = None,
        batching: BatchingConfig | None = None,
        allow_nan: bool = False,
        replace: bool = False,
    ) -> bool:
        """Deploy a model version; return True, or False with the reason logged."""

        async def deploy() -> None:
            await self.server.deploy_model(
                model_id,
                version,
                model_instance,
                set_active=set_active,
                metadata=metadata,
                features=features,
                output=output,
                batching=batching,
                allow_nan=allow_nan,
                replace=replace,
                error_threshold=error_threshold,
                health_check_fn=health_check_fn,
            )

        try:
            self._loop.call(deploy)
        except TurnoutError as exc:
            logger.error("deploying %s:%s failed: %s", model_id, version, exc)
            return False
        return True

    def predict(
        self,
        model_id: str,
        inputs: object,
        version: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> np.ndarray[Any, Any]:
        """Return predictions for ``inputs`` (see :meth:`ModelServer.predict`)."""

        async def predict() -> np.ndarray[Any, Any]:
            return await self.server.predict(
                model_id, inputs, version=version, key=key, timeout=timeout
            )

        return self._loop.call(predict)

    def infer(
        self,
        model_id: str,
        inputs: object,
        version: str | None = None,
        key: str | None = None,
        timeout: float | None = None,
    ) -> InferenceResult:
        """Return the full result for ``inputs`` (see :meth:`ModelServer.infer`)."""

        async def infer() -> InferenceResult:
            return await self.server.infer(
                model_id, inputs, version=version, key=key, timeout=timeout
            )

        return self._loop.call(infer)

    def set_active_version(self, model_id: str, version: str) -> None:
        """Send the model's traffic to ``version`` from now on."""
        self._loop.call(self.server.set_active_version, model_id, version)

    def retire_model(self, model_id: str, version: str) -> None:
        """Remove a version, after answering the requests it already admitted."""
        self._loop.call(self.server.retire_model, model_id, version)

    @property
    def active_models(self) -> Mapping[str, str]:
        """A read-only live mapping of model_id to its active version."""
        return self.server.active_models

    def get_all_models_status(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Return ``{model_id: {version: {"status", "metrics", "metadata", ...}}}``."""

        async def status() -> dict[str, dict[str, dict[str, Any]]]:
            return self.server.get_all_models_status()

        return self._loop.call(status)

    def health_check(self, model_id: str, version: str | None = None) -> HealthReport:
        """Return the health of ``version`` (the active version when None)."""
        return self._loop.call(self.server.health_check, model_id, version)

    def close(self) -> None:
        """Answer every admitted request, release every model and stop the loop thread."""
        self._finalizer()

    def __enter__(self) -> ModelServingManager:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
