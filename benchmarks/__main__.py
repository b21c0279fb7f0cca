"""``python -m benchmarks COMMAND``: turnout's benchmarks (see benchmarks/README.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]

USAGE = """usage: python -m benchmarks {core,http,fleet,soak,peers} [options]

  core    in-process: turnout against bare ONNX Runtime and batching off
  http    over HTTP: turnout against the bare aiohttp ceiling and MLServer,
          closed and open loop, routing and resilience cost; table and plots
  fleet   3 replicas x 2 workers behind nginx, one Redis: rolling restart,
          SIGKILL, a canary and routing changes under load; a table
  soak    turnout serve under 10 minutes of mixed-routing load with outcomes:
          RSS growth after the first minute, and tracemalloc's growth sites
  peers   set up (--setup) or check the peer servers' virtualenv (MLServer)

python -m benchmarks COMMAND --help for a command's options."""


def _command(name: str) -> Callable[[Sequence[str]], int] | None:
    if name == "core":
        from benchmarks.core import main as core

        return core
    if name == "http":
        from benchmarks.httpbench import main as http

        return http
    if name == "fleet":
        from benchmarks.fleet import main as fleet

        return fleet
    if name == "soak":
        from benchmarks.soak import main as soak

        return soak
    if name == "peers":
        from benchmarks.peers import main as peers

        return peers
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a benchmark command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command = _command(args[0]) if args else None
    if command is None:
        print(USAGE, file=sys.stderr)
        problem = f"unknown command {args[0]!r}" if args else "a command is required"
        print(
            f"python -m benchmarks: error: {problem} (choose from core, http, fleet, soak, peers)",
            file=sys.stderr,
        )
        return 2
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())
