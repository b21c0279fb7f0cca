"""Launch ``turnout serve --repository DIR`` for the benchmark, on the event loop asked for.

Run: ``python -m benchmarks.serve_turnout --repository DIR --port P [--loop uvloop|asyncio]
[--workers N] [--grpc-port P] [--fault MODEL/VERSION=slow:SECONDS|fail] [--tracemalloc DIR]``.

Without ``--fault`` this is the ``turnout serve`` command line itself, on the
loop chosen (``--event-loop``, which ``--workers N`` hands on to every
worker). With it, the same server is assembled from the same
parts (``ModelServer(repository=...)`` and ``turnout.web.serve.serve``),
with the named versions' runtimes made slow or failing: the resilience
scenarios need a misbehaving version, which no repository can store.

With ``--tracemalloc DIR`` the process traces its allocations from before
turnout is imported, and writes a snapshot to ``DIR/snapshot-N.tracemalloc``
(N = 1, 2, ...) each time it gets SIGUSR1: the soak benchmark compares them.
It lives here rather than in turnout: tracing slows every allocation, which
no server in production should pay for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from benchmarks.eventloop import LOOPS, default_loop, use_loop

__all__ = ["SNAPSHOT_SIGNAL", "main", "snapshot_path"]

SNAPSHOT_SIGNAL = signal.SIGUSR1


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_turnout")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=LOOPS, default=default_loop())
    parser.add_argument("--workers", type=int, default=1, help="turnout serve --workers (1)")
    parser.add_argument("--grpc-port", type=int, default=None, help="turnout serve --grpc-port")
    parser.add_argument("--fault", action="append", default=[], metavar="MODEL/VERSION=FAULT")
    parser.add_argument(
        "--tracemalloc",
        type=Path,
        metavar="DIR",
        help="trace allocations; on SIGUSR1 write DIR/snapshot-N.tracemalloc",
    )
    parser.add_argument(
        "--tracemalloc-frames",
        type=int,
        default=1,
        metavar="N",
        help="frames kept per traced allocation (1: enough to group by line)",
    )
    args = parser.parse_args(argv)
    if args.fault and args.workers != 1:
        parser.error("--fault serves in this process: it takes no --workers")
    if args.tracemalloc is not None:
        if args.workers != 1:
            parser.error("--tracemalloc traces this process: it takes no --workers")
        _trace_allocations(args.tracemalloc, args.tracemalloc_frames)
    use_loop(args.loop)
    if not args.fault:
        from turnout.cli import main as turnout_main

        serve = ["serve", "--repository", args.repository, "--port", str(args.port), "--no-demo"]
        # turnout serve picks its own loop (uvloop when installed): name the one asked for.
        serve += ["--event-loop", args.loop, "--workers", str(args.workers)]
        if args.grpc_port is not None:
            serve += ["--grpc-port", str(args.grpc_port)]
        return turnout_main(serve)
    faults = [_parse_fault(text) for text in args.fault]
    asyncio.run(_serve_with_faults(args.repository, args.port, faults, args.grpc_port))
    return 0


def snapshot_path(directory: Path, number: int) -> Path:
    """Return where the ``number``-th snapshot (from 1) is written, whole once it exists."""
    return directory / f"snapshot-{number}.tracemalloc"


def _trace_allocations(directory: Path, frames: int) -> None:
    """Start tracemalloc and dump a snapshot on each SIGUSR1."""
    import tracemalloc

    # Imported before tracing starts: compiled traced, they took longer to load than a
    # short soak runs, and what importing allocates stays put, so it is no growth.
    import turnout.cli
    import turnout.web.admin
    import turnout.web.launch  # noqa: F401

    directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(frames)
    numbers = itertools.count(1)

    def dump(_signum: int, _frame: FrameType | None) -> None:
        # Run by the interpreter between two bytecodes of the main thread, the
        # event loop's: the server stands still while the snapshot is taken.
        path = snapshot_path(directory, next(numbers))
        partial = path.with_name(path.name + ".partial")
        tracemalloc.take_snapshot().dump(str(partial))
        os.replace(partial, path)  # whole or absent: the harness waits for the name

    signal.signal(SNAPSHOT_SIGNAL, dump)


def _parse_fault(text: str) -> tuple[str, str, str, float]:
    """Read ``model/version=slow:0.01`` or ``model/version=fail``."""
    target, _, fault = text.partition("=")
    model, _, version = target.partition("/")
    kind, _, value = fault.partition(":")
    if not model or not version or kind not in ("slow", "fail"):
        raise SystemExit(f"bad --fault {text!r}: want MODEL/VERSION=slow:SECONDS or =fail")
    return model, version, kind, float(value or 0)


async def _serve_with_faults(
    repository: str, port: int, faults: list[tuple[str, str, str, float]], grpc_port: int | None
) -> None:
    from turnout import ModelServer
    from turnout.core.deployments.faults import inject_faults
    from turnout.web.rpc.server import GrpcSettings
    from turnout.web.serve import serve

    async with ModelServer(repository=repository) as server:
        with contextlib.ExitStack() as stack:
            for model, version, kind, seconds in faults:
                deployment = server.get_deployment(model, version)
                injected = stack.enter_context(inject_faults(deployment))
                if kind == "slow":
                    injected.slow_down(seconds)
                else:
                    injected.fail_fraction(1.0)
            grpc = None if grpc_port is None else GrpcSettings(port=grpc_port)
            await serve(server, "127.0.0.1", port, on_started=_started, grpc=grpc)


def _started(url: str) -> None:
    print(f"turnout is serving on {url}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
