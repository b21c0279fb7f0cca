"""The ``turnout`` command line: ``turnout demo``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``turnout`` command line and return its exit status."""
    parser = argparse.ArgumentParser(prog="turnout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="serve two versions of a demo model in-process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "demo":
        from turnout.demo import run_demo

        asyncio.run(run_demo())
    return 0


if __name__ == "__main__":
    sys.exit(main())
