"""Run the README's first command in a fresh virtualenv, and check that it serves.

The README promises that, from a clone, its first command installs turnout
and serves the demo. When this was written, that command was::

    python -m pip install -e . && python -m turnout serve

CI's own environment has the ``test`` extra installed, so a dependency that
only the tests declare (pandas, once) goes unnoticed there while the command
crashes on a fresh machine. This check catches that. It:

1. reads the command from the first code block of README.md's "Two commands"
   section (it is not copied here, so the two cannot drift), and fails if it
   cannot find one that runs ``turnout serve``;
2. creates a new virtualenv (``python -m venv``, no extras, no system site
   packages) in a temporary directory;
3. runs the command exactly as written, with bash, from the root of this
   checkout, with the virtualenv's ``bin`` first on PATH so that ``python`` is
   the virtualenv's. pip's cache is used as usual, so the install takes a
   minute or two rather than downloading everything again;
4. polls ``GET /v2/health/ready`` until it answers 200 (at most 10 minutes,
   failing at once if the command exits), reads the demo model's input from
   ``GET /v2/models/breast_cancer`` and sends one V2 inference request with a
   row of scikit-learn's breast cancer data, which must succeed;
5. stops the server with SIGINT, as Ctrl-C would, and checks that it exits
   with status 0 within a minute and leaves no process behind.

Any other outcome fails the check: it prints why, below the tail of the
command's output, and exits non-zero. Whatever happens, the command's
processes are killed and the virtualenv is removed.

Port: ``turnout serve`` listens on 127.0.0.1:8080, so by default that is the
port used, and the check fails up front, saying so, if something already
listens there. On a machine where 8080 is taken, set
``TURNOUT_FIRST_COMMAND_PORT=N`` to append ``--port N`` to the command; that
is the only change to it the check ever makes.

The environment is the caller's, less what would make the virtualenv less
fresh or change what the command serves: PYTHONPATH and PYTHONHOME are
dropped (they would reach the caller's packages), and so is
TURNOUT_ADMIN_TOKEN (it would start the admin API on port 8081).

Standard library only: CI runs it with the system Python, before the test
extra is installed::

    python .ci/first_command.py
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SECTION = "Two commands"
HOST = "127.0.0.1"
DEFAULT_PORT = 8080  # turnout serve's default
PORT_ENV = "TURNOUT_FIRST_COMMAND_PORT"
MODEL = "breast_cancer"
# The install downloads onnxruntime, scikit-learn and the rest on a cold cache.
READY_TIMEOUT = 600.0
STOP_TIMEOUT = 60.0  # the server drains for at most 30 s (--shutdown-timeout)
REQUEST_TIMEOUT = 30.0
DROPPED_ENV = ("PYTHONPATH", "PYTHONHOME", "TURNOUT_ADMIN_TOKEN", "__PYVENV_LAUNCHER__")
TAIL_LINES = 120


class CheckFailed(Exception):
    """The check failed; the message says why."""


def first_command(readme: Path = README) -> str:
    """The first command of the README's "Two commands" section, as written there."""
    try:
        text = readme.read_text(encoding="utf-8")
    except OSError as exc:
        raise CheckFailed(f"cannot read {readme}: {exc}") from None
    heading = re.search(rf"^##[ \t]+{re.escape(SECTION)}[ \t]*$", text, re.MULTILINE)
    if heading is None:
        raise CheckFailed(f"{readme.name} has no '## {SECTION}' section")
    section = re.split(r"^## ", text[heading.end() :], maxsplit=1, flags=re.MULTILINE)[0]
    block = re.search(r"^```[^\n]*\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    if block is None:
        raise CheckFailed(f"{readme.name}: the '{SECTION}' section has no code block")
    command = ""
    for line in block.group(1).splitlines():
        stripped = line.strip()
        if not command and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):  # a command continued on the next line
            command += stripped[:-1]
            continue
        command += stripped
        break
    if not command:
        raise CheckFailed(f"{readme.name}: the '{SECTION}' code block has no command")
    if not re.search(r"\bturnout serve\b", command):
        raise CheckFailed(
            f"{readme.name}: the first command of '{SECTION}' no longer runs"
            f" `turnout serve`: {command!r}; update {Path(__file__).name} to match"
        )
    return command


def chosen_port() -> int | None:
    """The port from PORT_ENV, or None to run the command exactly as written."""
    value = os.environ.get(PORT_ENV, "").strip()
    if not value:
        return None
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise CheckFailed(f"{PORT_ENV} must be a port number from 1 to 65535, not {value!r}")
    return port


def require_free(port: int) -> None:
    """Fail, saying so, if something already listens on HOST:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As aiohttp binds: a connection closed a moment ago does not make the port busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            raise CheckFailed(
                f"port {port} on {HOST} is in use ({exc.strerror}), so `turnout serve` cannot"
                f" listen there; stop whatever listens on it, or set {PORT_ENV} to another"
                " port to run the command with --port"
            ) from None


def fresh_env(venv: Path) -> dict[str, str]:
    """The caller's environment, with the virtualenv first on PATH."""
    env = {key: value for key, value in os.environ.items() if key not in DROPPED_ENV}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = os.pathsep.join([str(venv / "bin"), env.get("PATH", os.defpath)])
    env["PYTHONUNBUFFERED"] = "1"  # the output tail shown on failure is complete
    return env


def request(url: str, body: Any = None) -> tuple[int, Any]:
    """GET (or POST JSON to) ``url``; return the status and the decoded JSON body."""
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def wait_ready(process: subprocess.Popen[bytes], base: str, started: float) -> None:
    """Poll the readiness endpoint until it answers 200; fail if the command exits first."""
    url = f"{base}/v2/health/ready"
    while True:
        code = process.poll()
        if code is not None:
            raise CheckFailed(f"the command exited with status {code} before {url} answered 200")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        # Not listening yet, or 503 until the models are deployed.
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() - started > READY_TIMEOUT:
            raise CheckFailed(f"{url} did not answer 200 within {READY_TIMEOUT:.0f} s")
        time.sleep(1)


def dataset_row(venv: Path) -> list[float]:
    """The first row of scikit-learn's breast cancer data, read with the virtualenv's Python."""
    script = "from sklearn.datasets import load_breast_cancer as l; print(l().data[0].tolist())"
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise CheckFailed(f"cannot load the breast cancer data in the virtualenv:\n{result.stderr}")
    return [float(value) for value in json.loads(result.stdout)]


def infer_once(base: str, venv: Path) -> dict[str, Any]:
    """Send one V2 inference request to the demo model; return the response if it succeeded."""
    status, metadata = request(f"{base}/v2/models/{MODEL}")
    if status != 200 or not isinstance(metadata, dict):
        raise CheckFailed(f"GET /v2/models/{MODEL} answered {status}: {metadata}")
    try:
        spec = metadata["inputs"][0]
        name, datatype, width = spec["name"], spec["datatype"], spec["shape"][1]
    except (KeyError, IndexError, TypeError):
        raise CheckFailed(
            f"GET /v2/models/{MODEL}: no input name, datatype and shape: {metadata}"
        ) from None
    row = dataset_row(venv)
    if width != len(row):
        raise CheckFailed(
            f"{MODEL} takes {width} features, but a row of the breast cancer data has {len(row)}"
        )
    body = {"inputs": [{"name": name, "shape": [1, width], "datatype": datatype, "data": row}]}
    status, answer = request(f"{base}/v2/models/{MODEL}/infer", body)
    if status != 200 or not isinstance(answer, dict):
        raise CheckFailed(f"POST /v2/models/{MODEL}/infer answered {status}: {answer}")
    if answer.get("model_name") != MODEL:
        raise CheckFailed(f"the inference response names model {answer.get('model_name')!r}")
    outputs = answer.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise CheckFailed(f"the inference response has no outputs: {answer}")
    return answer


def stop(process: subprocess.Popen[bytes]) -> float:
    """Stop the server with SIGINT, as Ctrl-C would; return how long it took to exit."""
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    try:
        code = process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CheckFailed(
            f"the server did not exit within {STOP_TIMEOUT:.0f} s of SIGINT"
        ) from None
    took = time.monotonic() - sent
    if code != 0:
        raise CheckFailed(f"the server exited with status {code} after SIGINT, not 0")
    if group_alive(process.pid):
        raise CheckFailed("the server exited, but processes it started are still running")
    return took


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group ``pgid`` is still running."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the command's process group, then SIGKILL whatever is left of it after a while."""
    for signum, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        # poll() reaps the group's leader: until then, as a zombie, it keeps the group alive.
        while (process.poll() is None or group_alive(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)


def tail(log: Path) -> str:
    """The last TAIL_LINES lines of the command's output."""
    try:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "(no output captured)"
    shown = lines[-TAIL_LINES:]
    skipped = f"... ({len(lines) - len(shown)} earlier lines)\n" if len(lines) > len(shown) else ""
    return skipped + "\n".join(shown)


def say(message: str) -> None:
    print(f"first command: {message}", flush=True)


def run() -> None:
    command = first_command()
    port = chosen_port()
    if port is not None:
        command += f" --port {port}"
    port = port or DEFAULT_PORT
    base = f"http://{HOST}:{port}"
    require_free(port)

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="turnout-first-command-"))
    venv, log = work / "venv", work / "output.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        say(f"creating a virtualenv in {venv}")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        say(f"running, in {REPO}:\n  $ {command}")
        with log.open("wb") as output:
            process = subprocess.Popen(
                ["bash", "-c", command],
                cwd=REPO,
                env=fresh_env(venv),
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, to signal and clean up
            )
        wait_ready(process, base, started)
        say(f"{base}/v2/health/ready answered 200 after {time.monotonic() - started:.0f} s")
        answer = infer_once(base, venv)
        outputs = ", ".join(f"{o.get('name')}={o.get('data')}" for o in answer["outputs"])
        say(f"inference OK: {MODEL} {answer.get('model_version')} answered {outputs}")
        took = stop(process)
        say(f"SIGINT: the server exited with status 0 after {took:.1f} s")
    except BaseException:
        if process is not None:
            print(
                f"--- the command's output (last {TAIL_LINES} lines) ---\n{tail(log)}\n---",
                file=sys.stderr,
                flush=True,
            )
        raise
    finally:
        if process is not None and (process.poll() is None or group_alive(process.pid)):
            kill_group(process)
        shutil.rmtree(work, ignore_errors=True)
    say(f"passed in {time.monotonic() - started:.0f} s")


def main() -> int:
    # On SIGTERM (a cancelled CI job) unwind, so the cleanup in run() still happens.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        run()
    except (CheckFailed, subprocess.SubprocessError) as exc:
        # Last, below the command's output: the line a CI log is read from.
        print(f"first command: FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
