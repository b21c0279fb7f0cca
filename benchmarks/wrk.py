"""Closed-loop load with wrk: one thread, C connections, each sending its next request on answer.

wrk is driven by a generated Lua script that cycles through the payload's
requests and, when done, prints one JSON line: request and error counts and
latency quantiles on :data:`~benchmarks.stats.QUANTILE_GRID`, so slices of a
cell can be merged into one distribution. Install it with ``apt-get install
wrk`` (Debian, Ubuntu) or ``brew install wrk``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.payloads import Payload
from benchmarks.stats import QUANTILE_GRID, Window

__all__ = ["INSTALL_HINT", "WrkRunner", "wrk_path", "wrk_version"]

INSTALL_HINT = "install wrk for faster closed-loop load: apt-get install wrk (or brew install wrk)"
MARK = "TURNOUT-BENCH "

_LUA = """
local files = {FILES}
local headers = {HEADERS}
local path = {PATH}
local requests = {{}}
local counter = 0

init = function(args)
  for i, name in ipairs(files) do
    local f = assert(io.open(name, "rb"))
    local body = f:read("*a")
    f:close()
    requests[i] = wrk.format("POST", path, headers[i], body)
  end
end

request = function()
  counter = counter + 1
  return requests[(counter % #requests) + 1]
end

done = function(summary, latency, _)
  local e = summary.errors
  local q = {{}}
  for i, p in ipairs({PERCENTILES}) do q[i] = latency:percentile(p) end
  io.write(string.format(
    '{MARK}{{"requests":%d,"duration_us":%d,"errors":%d,"quantiles_us":[%s]}}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, table.concat(q, ",")))
end
"""


def wrk_path() -> str | None:
    """Return the wrk executable, or None if it is not installed."""
    return shutil.which("wrk")


def wrk_version() -> str:
    """Return wrk's version line, e.g. "wrk 4.1.0" (wrk -v prints it, then its usage)."""
    wrk = wrk_path()
    if wrk is None:
        return "wrk not installed"
    try:
        out = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "wrk (version unknown)"
    first = (out.stdout or out.stderr).strip().splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk (version unknown)"


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of printable ASCII is a valid Lua string


class WrkRunner:
    """Runs wrk against one payload; the script and bodies are written once."""

    def __init__(self, payload: Payload, workdir: Path, name: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        files = []
        for i, (_, body) in enumerate(payload.requests):
            path = workdir / f"{name}-{i}.body"
            path.write_bytes(body)
            files.append(_lua_string(str(path)))
        headers = [
            "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in h.items()) + "}"
            for h, _ in payload.requests
        ]
        script = _LUA.format(
            FILES="{" + ", ".join(files) + "}",
            HEADERS="{" + ", ".join(headers) + "}",
            PATH=_lua_string(payload.path),
            PERCENTILES="{" + ", ".join(f"{p:.3f}" for p, _ in QUANTILE_GRID) + "}",
            MARK=MARK,
        )
        self.script = workdir / f"{name}.lua"
        self.script.write_text(script)

    def run(self, url: str, connections: int, seconds: float) -> Window:
        """Run closed-loop load for ``seconds`` and return what wrk saw."""
        wrk = wrk_path()
        assert wrk is not None
        duration = max(1, round(seconds))
        command = [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(self.script),
            url,
        ]
        out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60)
        for line in out.stdout.splitlines():
            if line.startswith(MARK):
                data = json.loads(line[len(MARK) :])
                break
        else:
            raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
        requests = int(data["requests"])
        quantiles = np.asarray(data["quantiles_us"], dtype=float) / 1e6
        masses = np.asarray([mass for _, mass in QUANTILE_GRID]) * requests
        return Window(
            requests=requests,
            errors=int(data["errors"]),
            seconds=data["duration_us"] / 1e6,
            latencies=quantiles if requests else np.empty(0),
            weights=masses if requests else np.empty(0),
        )
