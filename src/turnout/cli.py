"""The ``turnout`` command line: serve models, deploy them, and see what is served."""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import turnout
from turnout.commands.served_models import ServedModel, parse_served_model
from turnout.core.errors import TurnoutError
from turnout.core.execution.outputs import OutputMode
from turnout.serve_environment import env_default, env_flag
from turnout.web.auth import TOKEN_ENV
from turnout.web.eventloop import EVENT_LOOPS

if TYPE_CHECKING:  # loading the server (ONNX Runtime) waits until a command needs it
    from turnout.core.service.server import ModelServer
    from turnout.web.rpc.server import GrpcSettings

__all__ = ["STATE_ENV", "WORKERS_ENV", "build_parser", "main"]

# Where `turnout serve` keeps control state, unless --state says.
STATE_ENV = "TURNOUT_STATE"
# How many worker processes `turnout serve` runs, unless --workers says.
WORKERS_ENV = "TURNOUT_WORKERS"


REMOTE_REFUSAL = (
    "refusing to listen on {host!r}, which is reachable from other machines, without an"
    f" admin token: set {TOKEN_ENV} (the admin API then needs it, on its own port), or pass"
    " --allow-remote if this host is firewalled or behind an authenticating proxy."
)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"port must be from 0 to 65535 (0 picks a free one): {port}"
        )
    return port


def _workers(text: str) -> int:
    if text == "auto":
        from turnout.supervisor import usable_cores

        return usable_cores()
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError(f"workers must be from 1 to 256, or auto: {count}")
    return count


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < seconds < 86400:
        raise argparse.ArgumentTypeError(f"must be more than 0 and less than a day: {text}")
    return seconds


def _served_model(text: str) -> ServedModel:
    try:
        return parse_served_model(text)
    except TurnoutError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _metadata(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


# Plain text, as a terminal shows it: docstrings here are reStructuredText.
DESCRIPTION = """\
Serve scikit-learn and ONNX models, deploy them, and see what is served.

examples:
  turnout serve                                   the demo, on 127.0.0.1:8080
  TURNOUT_ADMIN_TOKEN=... turnout serve --repository models/
  turnout deploy model.joblib --model-id churn --version v2 --server http://127.0.0.1:8081
  turnout status --server http://127.0.0.1:8081

'turnout COMMAND --help' tells more of each command."""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``turnout`` command."""
    parser = argparse.ArgumentParser(
        prog="turnout",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"turnout {turnout.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="serve two versions of a demo model in-process")
    _add_serve(commands)
    _add_deploy(commands)
    _add_status(commands)
    return parser


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve models over HTTP (KServe V1, Open Inference Protocol V2, admin API)",
        description=(
            "Serve models over HTTP: KServe V1 and the Open Inference Protocol (V2) on --port,"
            f" and, when {TOKEN_ENV} (or --admin-token) is set, the admin API on --admin-port."
        ),
    )
    serve.add_argument(
        "--host",
        default=env_default("TURNOUT_HOST", "127.0.0.1"),
        help="address to listen on (127.0.0.1; $TURNOUT_HOST)",
    )
    serve.add_argument(
        "--port",
        type=_port,
        default=env_default("TURNOUT_PORT", "8080"),
        help="port to listen on (8080; 0 picks a free one; $TURNOUT_PORT)",
    )
    serve.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train and serve the built-in demo models (on when there are no models to serve)",
    )
    serve.add_argument(
        "--model",
        metavar="NAME[:VERSION]=PATH",
        type=_served_model,
        action="append",
        default=[],
        help="serve the model file PATH (.onnx; a joblib/pickle only with --allow-pickle), or"
        " the one model file in the directory PATH, as NAME (version 1 unless named);"
        " repeat for more models. As KServe runs a runtime: --model NAME=/mnt/models",
    )
    serve.add_argument(
        "--allow-pickle",
        action="store_true",
        default=None,
        help="let --model load scikit-learn pickles, which runs the code inside them: only for"
        " files you trust ($TURNOUT_ALLOW_PICKLE=1)",
    )
    serve.add_argument(
        "--repository",
        metavar="DIR",
        default=env_default("TURNOUT_REPOSITORY", None),
        help="store deployments and routing in DIR and restore them at start"
        " (--demo then deploys only into an empty repository; $TURNOUT_REPOSITORY)",
    )
    serve.add_argument(
        "--state",
        metavar="URL",
        default=env_default(STATE_ENV, None),
        help=f"where control state lives: memory (the default), or redis://host:port/db,"
        f" shared by every server given it (needs turnout[redis]; ${STATE_ENV})",
    )
    serve.add_argument(
        "--workers",
        metavar="N",
        type=_workers,
        default=env_default(WORKERS_ENV, "1"),
        help=f"worker processes serving the port (1; auto: one per usable core; ${WORKERS_ENV})."
        " They share control state and artifacts, so a change through any reaches all",
    )
    serve.add_argument(
        "--artifacts",
        metavar="DIR",
        default=env_default("TURNOUT_ARTIFACTS", None),
        help="directory where servers sharing --state share deployed ONNX files by digest"
        " (--workers makes one of its own; $TURNOUT_ARTIFACTS)",
    )
    serve.add_argument(
        "--grpc-port",
        metavar="PORT",
        type=_port,
        default=env_default("TURNOUT_GRPC_PORT", None),
        help="also serve the Open Inference Protocol over gRPC on this port of --host"
        " (off unless given; Triton uses 8001; docs/grpc.md; $TURNOUT_GRPC_PORT)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    serve.add_argument("--ready-file", default=None, help=argparse.SUPPRESS)
    serve.add_argument(
        "--shutdown-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=env_default("TURNOUT_SHUTDOWN_TIMEOUT", "30"),
        help="how long requests in flight get to be answered at shutdown"
        " (30; $TURNOUT_SHUTDOWN_TIMEOUT)",
    )
    serve.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="auto",
        help="auto: uvloop when installed (pip install 'turnout[uvloop]'), else asyncio's",
    )
    serve.add_argument(
        "--mlflow-experiment",
        metavar="NAME",
        default=None,
        help="track deployments and serving metrics in this MLflow experiment, at"
        " $MLFLOW_TRACKING_URI (needs turnout[mlflow]; docs/mlflow.md)",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        default=None,
        help="allow a non-loopback --host without an admin token ($TURNOUT_ALLOW_REMOTE=1)",
    )
    admin = serve.add_argument_group(
        "admin API",
        "Deploy, route, roll out and inspect over HTTP (docs/http.md, 'Admin API')."
        f" Off unless a token is set; prefer {TOKEN_ENV} to --admin-token, which other"
        " users of this machine can read in the process list.",
    )
    admin.add_argument(
        "--admin-token",
        metavar="TOKEN",
        default=None,
        help=f"bearer token of the admin API (default: ${TOKEN_ENV}); 16+ characters",
    )
    admin.add_argument(
        "--admin-host",
        default=env_default("TURNOUT_ADMIN_HOST", "127.0.0.1"),
        help="admin address (127.0.0.1; $TURNOUT_ADMIN_HOST)",
    )
    admin.add_argument(
        "--admin-port",
        type=_port,
        default=env_default("TURNOUT_ADMIN_PORT", "8081"),
        help="admin port (8081; 0 picks a free one; $TURNOUT_ADMIN_PORT)",
    )
    admin.add_argument(
        "--admin-without-token",
        action="store_true",
        help="serve the admin API with no token, to loopback connections only",
    )


def _add_target(command: argparse.ArgumentParser) -> None:
    target = command.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--server",
        metavar="URL",
        help="the admin API of a running server, e.g. http://127.0.0.1:8081",
    )
    target.add_argument(
        "--repository",
        metavar="DIR",
        help="a repository directory (a server on it picks the change up at its next start)",
    )
    command.add_argument(
        "--token", default=None, help=f"admin token for --server (default: ${TOKEN_ENV})"
    )


def _add_deploy(commands: Any) -> None:
    deploy = commands.add_parser(
        "deploy",
        help="deploy a .onnx file or a joblib/pickle scikit-learn model",
        description=(
            "Deploy a model version. PATH is a .onnx file, or a fitted scikit-learn model saved"
            " with joblib or pickle (.joblib, .pkl, .pickle): your own trusted file, unpickled"
            " and converted to ONNX here, so only ONNX is sent or stored."
        ),
    )
    deploy.add_argument("path", metavar="PATH", type=Path, help="the model file")
    deploy.add_argument("--model-id", required=True, help="the model's name")
    deploy.add_argument("--version", required=True, help="the version's name")
    _add_target(deploy)
    deploy.add_argument(
        "--features",
        default=None,
        help="comma-separated feature names, in input order (default: the model's own)",
    )
    deploy.add_argument(
        "--activate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="make it the active version (default: only if the model has none)",
    )
    deploy.add_argument("--replace", action="store_true", help="replace the version if it exists")
    deploy.add_argument(
        "--output",
        default=None,
        choices=[mode.value for mode in OutputMode],
        help="what predict returns (default: auto)",
    )
    deploy.add_argument(
        "--metadata",
        metavar="KEY=VALUE",
        type=_metadata,
        action="append",
        default=[],
        help="metadata kept with the version (repeatable)",
    )


def _add_status(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="list the models and versions a server or repository serves",
        description="Show every model and version: active, routing, requests, errors, p99.",
    )
    _add_target(status)
    status.add_argument("--json", action="store_true", help="print the admin API's JSON")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``turnout`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare "turnout": show what it can do
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from turnout.demo import run_demo

        asyncio.run(run_demo())
        return 0
    if args.command == "serve":
        return _serve(parser, args)
    try:
        if args.command == "deploy":
            return _deploy(args)
        return _status(args)
    except TurnoutError as exc:
        print(f"\nturnout {args.command}: {exc}", file=sys.stderr)
        return 1


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from turnout.web.hosts import is_loopback
    from turnout.web.serve import AdminSettings

    token = args.admin_token or os.environ.get(TOKEN_ENV) or None
    try:
        if args.allow_remote is None:
            args.allow_remote = env_flag("TURNOUT_ALLOW_REMOTE")
        if args.allow_pickle is None:
            args.allow_pickle = env_flag("TURNOUT_ALLOW_PICKLE")
    except ValueError as exc:
        parser.error(str(exc))
    admin = None
    try:
        if token is not None or args.admin_without_token:
            admin = AdminSettings(
                token=token,
                host=args.admin_host,
                port=args.admin_port,
                allow_unauthenticated=args.admin_without_token and token is None,
            )
    except TurnoutError as exc:
        parser.error(str(exc))
    if not is_loopback(args.host):
        if token is None and not args.allow_remote:
            parser.error(REMOTE_REFUSAL.format(host=args.host))
        print(
            f"warning: the inference API listens on {args.host}, reachable from other machines",
            file=sys.stderr,
        )
    # Without models to serve, the demo's are served; a repository's models win.
    demo = not args.model if args.demo is None else args.demo
    if args.workers > 1 and args.worker_index is None:
        return _supervise(args, token, demo)
    from turnout.web.eventloop import loop_factory
    from turnout.web.launch import run_serve

    try:
        with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
            runner.run(
                run_serve(
                    args.host,
                    args.port,
                    demo=demo,
                    prepare=_deploying(args.model, args.allow_pickle) if args.model else None,
                    repository=args.repository,
                    state=args.state,
                    artifacts=args.artifacts,
                    admin=admin,
                    shutdown_timeout=args.shutdown_timeout,
                    mlflow_experiment=args.mlflow_experiment,
                    reuse_port=args.reuse_port,
                    banner=not args.worker_index,
                    ready_file=args.ready_file,
                    grpc=_grpc_settings(args),
                )
            )
    except TurnoutError as exc:  # e.g. --mlflow-experiment without MLflow installed
        print(f"turnout serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # the address is taken, or not this machine's
        return _cannot_listen(exc)
    except KeyboardInterrupt:  # before the server took over the signal, e.g. while training
        return 130
    return 0


def _deploying(
    models: Sequence[ServedModel], allow_pickle: bool
) -> Callable[[ModelServer], Awaitable[None]]:
    """What deploys the --model files into a server at start."""
    from turnout.commands.served_models import deploy_served_models

    async def deploy(server: ModelServer) -> None:
        await deploy_served_models(server, models, allow_pickle=allow_pickle)

    return deploy


def _grpc_settings(args: argparse.Namespace) -> GrpcSettings | None:
    """The gRPC service's settings, if --grpc-port asks for it."""
    if args.grpc_port is None:
        return None
    from turnout.web.rpc.server import GrpcSettings

    return GrpcSettings(host=args.host, port=args.grpc_port)


def _cannot_listen(exc: OSError) -> int:
    hint = ""
    if exc.errno == errno.EADDRINUSE:
        hint = "; another program listens there: stop it, or choose --port/--admin-port/--grpc-port"
    print(f"turnout serve: {exc.strerror or exc}{hint}", file=sys.stderr)
    return 1


def _supervise(args: argparse.Namespace, token: str | None, demo: bool) -> int:
    """Run ``args.workers`` workers of this ``turnout serve`` under a supervisor."""
    from turnout.supervisor import RunDirectory, Supervisor
    from turnout.web.listeners import Listeners

    serves_admin = token is not None or args.admin_without_token
    admin_address = (args.admin_host, args.admin_port) if serves_admin else None
    try:
        # First without SO_REUSEPORT, which a port anyone holds refuses (even one
        # another turnout holds with it); this also picks the ports for port 0.
        grpc_address = None if args.grpc_port is None else (args.host, args.grpc_port)
        probe = Listeners.bind(args.host, args.port, admin_address, grpc=grpc_address)
        port = probe.inference[0].getsockname()[1]
        admin_port = probe.admin[0].getsockname()[1] if probe.admin else args.admin_port
        grpc_port = probe.grpc[0].getsockname()[1] if probe.grpc else None
        probe.close()
        # Then held, not listening, while the workers run, so no one takes them meanwhile.
        reserved = Listeners.bind(
            args.host,
            port,
            (args.admin_host, admin_port) if serves_admin else None,
            grpc=None if grpc_port is None else (args.host, grpc_port),
            reuse_port=True,
        )
    except OSError as exc:
        return _cannot_listen(exc)
    run = RunDirectory()
    shared = run.shared(args.repository)
    state = args.state or f"sqlite:///{shared / 'control-state.db'}"
    artifacts = args.artifacts or str(shared / "artifacts")
    ready_file = run.path / "worker-0-serves"

    def command(index: int) -> list[str]:
        line = [sys.executable, "-m", "turnout", "serve", "--host", args.host]
        line += ["--port", str(port), "--reuse-port", "--worker-index", str(index)]
        line += ["--state", state, "--artifacts", artifacts, "--workers", "1"]
        line += ["--shutdown-timeout", str(args.shutdown_timeout)]
        line += ["--event-loop", args.event_loop, "--admin-host", args.admin_host]
        line += ["--admin-port", str(admin_port)]
        if grpc_port is not None:
            line += ["--grpc-port", str(grpc_port)]
        if args.admin_without_token:
            line.append("--admin-without-token")
        if args.allow_remote:
            line.append("--allow-remote")
        if args.mlflow_experiment is not None:
            line += ["--mlflow-experiment", args.mlflow_experiment]
        # Worker 0 trains the demo; the others load what it deploys. Every worker is given
        # the repository: worker 0 writes it, and another takes over if it dies.
        if args.repository is not None:
            line += ["--repository", args.repository]
        if index == 0:
            line += ["--ready-file", str(ready_file)]
            line.append("--demo" if demo else "--no-demo")
            for model in args.model:
                line += ["--model", f"{model.name}:{model.version}={model.path}"]
            if args.allow_pickle:
                line.append("--allow-pickle")
        else:
            line.append("--no-demo")
        return line

    # The token goes to the workers in their environment, never on a command line.
    env = {TOKEN_ENV: token} if token is not None else {}
    try:
        supervisor = Supervisor(
            args.workers, command, args.shutdown_timeout, env, first_ready=ready_file
        )
        return supervisor.run()
    finally:
        reserved.close()
        run.close()


def _target(args: argparse.Namespace) -> dict[str, Any]:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    return {"server_url": args.server, "token": token, "repository": args.repository}


def _deploy(args: argparse.Namespace) -> int:
    from turnout.commands.deploy import run_deploy

    options: dict[str, Any] = {
        "features": args.features.split(",") if args.features else None,
        "set_active": args.activate,
        "replace": args.replace or None,
        "output": args.output,
        "metadata": dict(args.metadata) or None,
    }
    status = asyncio.run(
        run_deploy(args.path, args.model_id, args.version, options, **_target(args))
    )
    active = " (active)" if status["status"] == "active" else ""
    print(f"deployed {args.model_id} {args.version}{active}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from turnout.commands.status import collect_status, format_status

    status = asyncio.run(collect_status(**_target(args)))
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


if __name__ == "__main__":
    sys.exit(main())
