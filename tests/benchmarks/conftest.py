"""Fixtures shared by the benchmark harness's tests: made-up windows and settings, table parsing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from benchmarks.httpbench import Settings
from benchmarks.stats import Window

WindowMaker = Callable[..., Window]
Tables = list[list[list[str]]]


@pytest.fixture
def make_window() -> WindowMaker:
    """Return a maker of one second's window: requests, the server's CPU, and its batches."""

    def make(
        requests: int,
        cpu_seconds: float,
        *,
        batch_rows: int | None = None,
        batches: int | None = None,
    ) -> Window:
        latencies = np.linspace(0.001, 0.02, 100)
        return Window(
            requests=requests,
            seconds=1.0,
            latencies=latencies,
            weights=np.ones_like(latencies),
            cpu_seconds=cpu_seconds,
            generator_cpu_seconds=0.15,
            machine_cpu_seconds=cpu_seconds + 0.15 + 0.1,
            batch_rows=batch_rows,
            batches=batches,
        )

    return make


@pytest.fixture
def quick_settings() -> Settings:
    """Return the settings of a small closed-loop run, for code that only reads them."""
    return Settings(
        seconds=1.0,
        rounds=2,
        warmup=0.0,
        concurrency=(1,),
        rates=(1.0,),
        kinds=("v2-json-1",),
        routing_concurrency=(1,),
        sections=("closed",),
        loop="asyncio",
        generator="builtin",
        servers=("ceiling",),
        baselines=(),
        asyncio_too=False,
        trees=1,
        depth=1,
        save=False,
        out=None,
        workdir=Path("."),
        quick=True,
        profile=False,
    )


@pytest.fixture
def tables() -> Callable[[str], Tables]:
    """Return a reader of every markdown table in a text, as rows of stripped cells."""

    def read(text: str) -> Tables:
        found: Tables = []
        current: list[list[str]] = []
        for line in [*text.splitlines(), ""]:
            if line.startswith("|"):
                current.append([cell.strip() for cell in line.strip().strip("|").split("|")])
            elif current:
                found.append(current)
                current = []
        return found

    return read
