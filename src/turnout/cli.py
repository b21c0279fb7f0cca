"""The ``turnout`` command line: ``turnout demo`` and ``turnout serve``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]

REMOTE_REFUSAL = (
    "refusing to listen on {host!r}, which is reachable from other machines: the HTTP API"
    " has no authentication yet, so anyone who can reach it could use your models (and,"
    " once the admin API lands, change them). Listen on 127.0.0.1, or pass --allow-remote"
    " if this host is firewalled or behind an authenticating proxy."
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


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``turnout`` command."""
    parser = argparse.ArgumentParser(prog="turnout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="serve two versions of a demo model in-process")
    serve = commands.add_parser(
        "serve",
        help="serve models over HTTP (KServe V1 and Open Inference Protocol V2)",
        description="Serve models over HTTP: KServe V1 and the Open Inference Protocol (V2).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, default=8080, help="port to listen on (8080; 0 picks a free one)"
    )
    serve.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train and serve the built-in demo models (on when there are no models to serve)",
    )
    serve.add_argument(
        "--repository",
        metavar="DIR",
        default=None,
        help="store deployments and routing in DIR and restore them at start"
        " (--demo then deploys only into an empty repository)",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (the API has no authentication yet)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``turnout`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from turnout.demo import run_demo

        asyncio.run(run_demo())
        return 0
    from turnout.web.serve import is_loopback

    if not is_loopback(args.host):
        if not args.allow_remote:
            parser.error(REMOTE_REFUSAL.format(host=args.host))
        print(
            f"warning: listening on {args.host}, reachable from other machines, with no"
            " authentication",
            file=sys.stderr,
        )
    # Without models to serve, the demo's are served; a repository's models win.
    demo = True if args.demo is None else args.demo
    from turnout.web.launch import run_serve

    try:
        asyncio.run(run_serve(args.host, args.port, demo=demo, repository=args.repository))
    except OSError as exc:  # the address is taken, or not this machine's
        print(f"turnout: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before the server took over the signal, e.g. while training
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
