"""Launch ``turnout serve --repository DIR`` for the benchmark, on the event loop asked for.

Run: ``python -m benchmarks.serve_turnout --repository DIR --port P [--loop uvloop|asyncio]
[--workers N] [--fault MODEL/VERSION=slow:SECONDS|fail]``.

Without ``--fault`` this is the ``turnout serve`` command line itself, on the
loop chosen (``--event-loop``, which ``--workers N`` hands on to every
worker). With it, the same server is assembled from the same
parts (``ModelServer(repository=...)`` and ``turnout.web.serve.serve``),
with the named versions' runtimes made slow or failing: the resilience
scenarios need a misbehaving version, which no repository can store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from benchmarks.eventloop import LOOPS, default_loop, use_loop

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve_turnout")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=LOOPS, default=default_loop())
    parser.add_argument("--workers", type=int, default=1, help="turnout serve --workers (1)")
    parser.add_argument("--fault", action="append", default=[], metavar="MODEL/VERSION=FAULT")
    args = parser.parse_args(argv)
    if args.fault and args.workers != 1:
        parser.error("--fault serves in this process: it takes no --workers")
    use_loop(args.loop)
    if not args.fault:
        from turnout.cli import main as turnout_main

        serve = ["serve", "--repository", args.repository, "--port", str(args.port), "--no-demo"]
        # turnout serve picks its own loop (uvloop when installed): name the one asked for.
        serve += ["--event-loop", args.loop, "--workers", str(args.workers)]
        return turnout_main(serve)
    faults = [_parse_fault(text) for text in args.fault]
    asyncio.run(_serve_with_faults(args.repository, args.port, faults))
    return 0


def _parse_fault(text: str) -> tuple[str, str, str, float]:
    """Read ``model/version=slow:0.01`` or ``model/version=fail``."""
    target, _, fault = text.partition("=")
    model, _, version = target.partition("/")
    kind, _, value = fault.partition(":")
    if not model or not version or kind not in ("slow", "fail"):
        raise SystemExit(f"bad --fault {text!r}: want MODEL/VERSION=slow:SECONDS or =fail")
    return model, version, kind, float(value or 0)


async def _serve_with_faults(
    repository: str, port: int, faults: list[tuple[str, str, str, float]]
) -> None:
    from turnout import ModelServer
    from turnout.core.deployments.faults import inject_faults
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
            await serve(server, "127.0.0.1", port, on_started=_started)


def _started(url: str) -> None:
    print(f"turnout is serving on {url}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
