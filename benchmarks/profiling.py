"""Where a served request's time goes: py-spy samples of a turnout server under load.

py-spy samples the server's threads from outside (``--nonblocking``: the
process is never paused, so the numbers are those of a normal run). The
summary lists, per function, the share of samples with that function on the
stack (inclusive), grouped into the layers a request passes through.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

__all__ = ["LAYERS", "py_spy_path", "record", "summarize"]

# The layers of a served request, by the first matching function on the stack.
WAITING = "worker thread blocked on its queue (py-spy cannot always tell this is idle)"
LAYERS: tuple[tuple[str, str], ...] = (
    ("model execution (ONNX Runtime, in the worker thread)", "OnnxRuntime.run"),
    ("worker thread hand-off: queueing a batch, waking the loop", "BatchWorkers."),
    ("batcher (forming, finishing, reporting batches)", "AdaptiveBatcher."),
    ("turnout request path (route, validate, queue, result)", "ModelServer."),
    ("V2 handler: body, tensors, JSON in and out", "web/v2.py"),
    ("aiohttp: HTTP parsing, routing, response writing", "aiohttp/"),
)


def py_spy_path() -> str | None:
    """Return the py-spy executable, or None if it is not installed."""
    return shutil.which("py-spy")


def record(pid: int, seconds: int, out: Path, load: Callable[[], object]) -> Path:
    """Sample ``pid`` for ``seconds`` while ``load()`` runs; write raw stacks to ``out``."""
    spy = py_spy_path()
    assert spy is not None
    command = [spy, "record", "--nonblocking", "--threads", "--rate", "500", "--format", "raw"]
    command += ["-o", str(out), "-d", str(seconds), "--pid", str(pid)]
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        load()
    finally:
        _, err = sampler.communicate(timeout=seconds + 60)
    if sampler.returncode != 0 or not out.exists():
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    return out


def summarize(raw: Path, top: int = 40) -> str:
    """Return a text summary of py-spy's raw (collapsed) stacks."""
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        total += samples
        exact = stack.split(";")
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in exact]
        for frame in set(frames):
            inclusive[frame] += samples
        layers[WAITING if _waiting(exact[-1]) else _layer(frames)] += samples
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (both threads, idle time excluded)", "", "By layer (innermost):"]
    for name, _ in (*LAYERS, (WAITING, ""), ("other (event loop, interpreter)", "")):
        lines.append(f"  {layers[name] / total:6.1%}  {name}")
    lines += ["", "By function (inclusive):"]
    for frame, samples in inclusive.most_common(top):
        lines.append(f"  {samples / total:6.1%}  {frame[:150]}")
    return "\n".join(lines) + "\n"


def _queue_wait_line() -> int:
    """Return the line of BatchWorkers._serve where the thread waits for its next job."""
    import inspect

    from turnout.core.execution.worker import BatchWorkers

    lines, first = inspect.getsourcelines(BatchWorkers._serve)
    for offset, text in enumerate(lines):
        if "self._jobs.get()" in text:
            return first + offset
    return -1


def _waiting(innermost: str) -> bool:
    """True for a sample of the worker thread blocked in its queue's get()."""
    return "BatchWorkers._serve" in innermost and innermost.endswith(f":{_WAIT_LINE})")


_WAIT_LINE = _queue_wait_line()


def _layer(frames: list[str]) -> str:
    """Name the innermost layer on a stack."""
    for frame in reversed(frames):
        for name, marker in LAYERS:
            if marker in frame:
                return name
    return "other (event loop, interpreter)"
