"""``turnout serve``: build the ModelServer, deploy what it serves, print how to query it, serve."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from turnout.core.service.server import ModelServer
from turnout.core.state.locations import open_state
from turnout.web.auth import TOKEN_ENV
from turnout.web.examples import admin_example, curl, v1_predict_example, v2_infer_example
from turnout.web.listeners import Listeners
from turnout.web.rpc.server import GrpcSettings
from turnout.web.serve import (
    DEFAULT_ADMIN_PORT,
    SHUTDOWN_TIMEOUT,
    AdminSettings,
    bind_listeners,
    serve,
)
from turnout.web.tensors import datatype_of

__all__ = ["run_serve"]


async def run_serve(
    host: str,
    port: int,
    *,
    demo: bool,
    prepare: Callable[[ModelServer], Awaitable[None]] | None = None,
    repository: str | os.PathLike[str] | None = None,
    state: str | None = None,
    artifacts: str | os.PathLike[str] | None = None,
    admin: AdminSettings | None = None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
    mlflow_experiment: str | None = None,
    reuse_port: bool = False,
    banner: bool = True,
    ready_file: str | os.PathLike[str] | None = None,
    grpc: GrpcSettings | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; then answer in-flight requests and close the server.

    With ``repository`` the server restores its models from there first, and
    the demo is deployed only if that leaves it with none. ``prepare`` is awaited
    with the server before the demo or the listeners: ``turnout serve
    --model`` deploys its files there. Shutdown takes at
    most about ``shutdown_timeout`` seconds: requests the HTTP side has not
    answered by then are cut off, and those the server admitted get
    ServerClosedError. With ``mlflow_experiment``, deployments and serving
    metrics are tracked in that MLflow experiment (docs/mlflow.md). ``state``
    is where control state lives (``open_state``): shared by every server
    given the same location; ``artifacts`` the directory where they share
    deployed ONNX. ``reuse_port`` binds with SO_REUSEPORT, as every worker of
    ``--workers N`` does; ``banner=False`` prints no banner (all workers but
    the first). ``ready_file`` is touched once the server listens: the
    supervisor starts the other workers then. ``grpc`` serves the Open
    Inference Protocol's gRPC service too (docs/grpc.md).
    """
    # Bound before the repository is opened or the demo trained: a port in use fails at once.
    listeners = bind_listeners(host, port, admin, grpc, reuse_port=reuse_port)
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(listeners.close)
        plugins: list[object] = []
        if mlflow_experiment is not None:
            from turnout.plugins.mlflow import MlflowConfig, MlflowTracker

            tracker = MlflowTracker(MlflowConfig(experiment=mlflow_experiment))
            # Registered first, so it closes after the server: the last events get logged.
            stack.push_async_callback(tracker.aclose)
            plugins.append(tracker)
        control = open_state(state)
        if control is not None:
            stack.push_async_callback(control.close)  # after the server, which writes to it
        server = await stack.enter_async_context(
            ModelServer(repository=repository, plugins=plugins, state=control, artifacts=artifacts)
        )
        if prepare is not None:
            await prepare(server)
        await _run(
            server,
            listeners,
            demo,
            repository,
            admin,
            shutdown_timeout,
            banner,
            ready_file,
            _Grpc(grpc, reuse_port) if grpc is not None else None,
        )
    print("turnout: stopped", file=sys.stderr, flush=True)


async def _run(
    server: ModelServer,
    listeners: Listeners,
    demo: bool,
    repository: str | os.PathLike[str] | None,
    admin: AdminSettings | None,
    shutdown_timeout: float,
    banner: bool = True,
    ready_file: str | os.PathLike[str] | None = None,
    grpc: _Grpc | None = None,
) -> None:
    """Deploy the demo if asked, then serve until a signal; the caller closes the server."""
    if repository is not None and server.get_all_models_status():
        print(f"turnout: restored the models in {repository}", file=sys.stderr, flush=True)
        demo = False
    if demo and await server.control_state.model_ids():
        demo = False  # the shared control state has models: they are loaded, not trained
    example_row = await _deploy_demo(server) if demo else None

    def started(url: str) -> None:
        """Print where the server listens and how to query it."""
        if ready_file is not None:
            Path(ready_file).touch()
        if not banner:
            return
        _print_banner(server, url, example_row)
        if admin is None:
            print(
                f"\nThe admin API is off: set {TOKEN_ENV} to serve it on port"
                f" {DEFAULT_ADMIN_PORT} (docs/http.md).",
                flush=True,
            )

    def admin_started(url: str) -> None:
        """Print where the admin API listens and how to use it."""
        if not banner:
            return
        guard = "token-protected" if admin and admin.token else "no token, loopback only"
        variable = TOKEN_ENV if admin and admin.token else None
        status = admin_example(url, "/admin/status", variable)
        page = "asks for the token once" if variable else "loopback only"
        print(
            f"\nAdmin API ({guard}) on {url}:\n  {status}\nStatus page ({page}): {url}/ui/\n",
            flush=True,
        )

    def grpc_started(address: str) -> None:
        """Print where the gRPC service listens."""
        if banner:
            print(
                f"\nOpen Inference Protocol over gRPC on {address}"
                " (tritonclient.grpc, the KServe SDK; docs/grpc.md)",
                flush=True,
            )

    await serve(
        server,
        admin=admin,
        listeners=listeners,
        on_started=started,
        on_admin_started=admin_started,
        shutdown_timeout=shutdown_timeout,
        grpc=None if grpc is None else grpc.settings,
        on_grpc_started=grpc_started,
        reuse_port=grpc is not None and grpc.reuse_port,
    )
    print("turnout: shutting down; answering requests in flight", file=sys.stderr, flush=True)
    await server.close(timeout=shutdown_timeout)


@dataclass(frozen=True)
class _Grpc:
    settings: GrpcSettings
    reuse_port: bool


async def _deploy_demo(server: ModelServer) -> dict[str, float]:
    """Deploy the demo's two versions behind a 70/30 split; return one held-out row."""
    from turnout.demo import DEMO_MODEL, deploy_demo_models

    print("turnout: training the demo models...", file=sys.stderr, flush=True)
    held_out = await deploy_demo_models(server)
    await server.setup_ab_test(DEMO_MODEL, ["v1", "v2"], [0.7, 0.3])
    return held_out.rows[0]


def _print_banner(server: ModelServer, url: str, row: dict[str, float] | None) -> None:
    lines = [f"turnout is serving on {url} (Ctrl-C to stop)", ""]
    status = server.get_all_models_status()
    if not status:
        lines.append("No models are deployed.")
    for model, versions in sorted(status.items()):
        routing = next(iter(versions.values()))["routing"]
        shown = ", ".join(
            f"{v} (active)" if info["status"] == "active" else v for v, info in versions.items()
        )
        lines.append(f"Model {model}: versions {shown}; routing {routing['strategy']}")
    if row is not None:
        from turnout.demo import DEMO_MODEL

        deployment = server.get_deployment(DEMO_MODEL)
        datatype = datatype_of(deployment.schema.dtype)
        name = deployment.loaded.signature.input_name
        lines += [
            "",
            "Ask for a prediction, KServe V1:",
            f"  {v1_predict_example(url, DEMO_MODEL, row)}",
            "",
            "Open Inference Protocol (V2):",
            f"  {v2_infer_example(url, DEMO_MODEL, list(row.values()), datatype, name)}",
            "",
            "Model metadata and health:",
            f"  {curl(f'{url}/v2/models/{DEMO_MODEL}')}",
            f"  {curl(f'{url}/v2/health/ready')}",
        ]
    print("\n".join(lines), flush=True)
