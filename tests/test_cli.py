"""The command line: ``turnout serve`` as a real subprocess, its flags, and graceful shutdown."""

from __future__ import annotations

import asyncio
import importlib.util
import shlex
import signal
import socket
from typing import Any

import aiohttp
import numpy as np
import pytest

from support import read_banner, turnout_serve
from turnout.cli import build_parser, main
from turnout.core.deployments.faults import FaultInjectingRuntime
from turnout.serve_environment import SERVE_ENVIRONMENT, env_flag
from turnout.web import is_loopback, serve


async def run_curl(session: aiohttp.ClientSession, command: str) -> tuple[int, Any]:
    """Do what a printed curl command does (GET, or POST of -d with its -H headers)."""
    parts = shlex.split(command)
    assert parts[0] == "curl"
    headers: dict[str, str] = {}
    data: str | None = None
    url = None
    i = 1
    while i < len(parts):
        if parts[i] == "-H":
            name, value = parts[i + 1].split(":", 1)
            headers[name] = value.strip()
            i += 2
        elif parts[i] == "-d":
            data = parts[i + 1]
            i += 2
        elif parts[i].startswith("-"):
            i += 1
        else:
            url = parts[i]
            i += 1
    assert url is not None
    method = "POST" if data is not None else "GET"
    async with session.request(method, url, data=data, headers=headers) as response:
        return response.status, await response.json()


async def test_serve_demo_answers_its_printed_curls_and_stops_on_sigint() -> None:
    async with turnout_serve("--demo") as process:
        banner = await read_banner(process, "/v2/health/ready")
        assert banner[0].startswith("turnout is serving on http://127.0.0.1:")
        commands = [line.strip() for line in banner if line.strip().startswith("curl ")]
        (v1,) = [c for c in commands if ":predict" in c]
        (v2,) = [c for c in commands if "/infer" in c]

        async with aiohttp.ClientSession() as session:
            status, body = await run_curl(session, v1)
            assert status == 200, body
            (prediction,) = body["predictions"]
            assert 0.0 <= prediction <= 1.0

            status, body = await run_curl(session, v2)
            assert status == 200, body
            assert body["model_name"] == "breast_cancer"
            assert body["model_version"] in ("v1", "v2")
            label, probabilities = body["outputs"]
            assert label["data"][0] in (0, 1)
            assert np.isclose(sum(probabilities["data"]), 1.0, atol=1e-5)

            for command in commands:
                if command not in (v1, v2):
                    status, body = await run_curl(session, command)
                    assert status == 200, (command, body)

        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        assert process.stderr is not None
        errors = (await process.stderr.read()).decode()
        assert "turnout: stopped" in errors
        assert "Traceback" not in errors


async def test_serve_restores_its_repository_and_skips_the_demo_then(tmp_path) -> None:
    repository = str(tmp_path / "repo")
    async with turnout_serve("--demo", "--repository", repository) as process:
        await read_banner(process, "/v2/health/ready")
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    assert (tmp_path / "repo" / "breast_cancer" / "v1" / "model.onnx").is_file()
    async with turnout_serve("--demo", "--repository", repository) as process:
        banner = await read_banner(process, "Model breast_cancer")
        assert "versions v1 (active), v2; routing weighted" in banner[-1]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
        assert process.stderr is not None
        errors = (await process.stderr.read()).decode()
    assert "restored the models" in errors
    assert "training the demo models" not in errors
    assert "Traceback" not in errors


async def test_serve_without_models_stops_on_sigterm() -> None:
    async with turnout_serve("--no-demo") as process:
        banner = await read_banner(process, "No models are deployed")
        url = banner[0].split()[4]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/v2/health/ready") as response:
                assert (response.status, await response.json()) == (503, {"ready": False})
            async with session.get(f"{url}/v1/models") as response:
                assert await response.json() == {"models": []}
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_shutdown_answers_the_requests_in_flight(server, binary_model, binary_data) -> None:
    deployment = await server.deploy_model("cancer", "v1", binary_model)
    X = binary_data.X_test.iloc[:1].to_numpy()
    expected = await server.predict("cancer", X)
    stop = asyncio.Event()
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        serve(server, "127.0.0.1", 0, on_started=started.set_result, stop=stop)
    )
    url = await started
    request = {
        "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP64", "data": X.tolist()}]
    }

    async def infer(session: aiohttp.ClientSession) -> tuple[int, Any]:
        async with session.post(f"{url}/v2/models/cancer/infer", json=request) as response:
            return response.status, await response.json()

    fault = FaultInjectingRuntime(deployment.runtime)
    deployment.runtime = fault
    async with aiohttp.ClientSession() as session:
        fault.hang()
        in_flight = asyncio.create_task(infer(session))
        for _ in range(2000):
            if deployment.batcher.statistics().batches_in_flight:
                break
            await asyncio.sleep(0.001)
        stop.set()
        await asyncio.sleep(0.2)
        assert not serving.done()  # waiting for the request in flight
        fault.release()
        status, body = await in_flight
    await asyncio.wait_for(serving, 10)
    assert status == 200
    np.testing.assert_allclose(body["outputs"][1]["data"][1], expected[0], rtol=1e-6)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await infer(session)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "myhost"])
def test_serve_refuses_a_remote_host_without_a_token_or_allow_remote(
    host: str, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("TURNOUT_ADMIN_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--host", host])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--allow-remote" in err
    assert "TURNOUT_ADMIN_TOKEN" in err


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_serve_refuses_a_bad_port(port: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", port])
    assert exit_info.value.code == 2
    assert "port" in capsys.readouterr().err


def test_serve_says_so_when_the_port_is_taken(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--no-demo", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert "cannot listen" in err
    assert str(port) in err


@pytest.mark.parametrize("which", ["--port", "--admin-port", "--grpc-port"])
def test_a_taken_port_fails_before_the_demo_trains_or_the_repository_is_written(
    which: str, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("TURNOUT_ADMIN_TOKEN", "a-token-of-sixteen-chars")
    repository = tmp_path / "models"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        others = [f for f in ("--port", "--admin-port", "--grpc-port") if f != which]
        argv = ["serve", "--demo", "--repository", str(repository), which, str(port)]
        argv += [part for flag in others for part in (flag, "0")]
        assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in err
    assert "training" not in err
    assert not repository.exists()


def test_version_and_bare_turnout(capsys) -> None:
    import turnout

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"turnout {turnout.__version__}\n"

    assert main([]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: turnout")
    assert "serve" in out
    assert err == ""


def test_top_level_help_is_plain_text(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "turnout serve" in out
    assert "``" not in out
    assert "::" not in out


def test_serve_help_lists_the_flags(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--host",
        "--port",
        "--demo",
        "--no-demo",
        "--allow-remote",
        "--repository",
        "--shutdown-timeout",
        "--admin-token",
        "--admin-port",
    ):
        assert flag in out


def test_demo_still_runs(capsys) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "70/30 weighted A/B split" in out
    assert "Status:" in out


def test_the_event_loop_is_uvloop_when_installed_unless_asked_otherwise() -> None:
    from turnout.core.errors import InvalidConfigError
    from turnout.web.eventloop import loop_factory

    assert loop_factory("asyncio") is None
    installed = importlib.util.find_spec("uvloop") is not None
    assert (loop_factory("auto") is not None) is installed
    with pytest.raises(InvalidConfigError):
        loop_factory("trio")
    if installed:
        loop = loop_factory("uvloop")()  # type: ignore[misc]
        assert type(loop).__module__.startswith("uvloop")
        loop.close()


SERVE_ENV = {
    "TURNOUT_HOST": ("0.0.0.0", "host", "0.0.0.0"),
    "TURNOUT_PORT": ("9090", "port", 9090),
    "TURNOUT_REPOSITORY": ("/models", "repository", "/models"),
    "TURNOUT_STATE": ("redis://redis:6379/0", "state", "redis://redis:6379/0"),
    "TURNOUT_ARTIFACTS": ("/models/.artifacts", "artifacts", "/models/.artifacts"),
    "TURNOUT_WORKERS": ("3", "workers", 3),
    "TURNOUT_SHUTDOWN_TIMEOUT": ("20", "shutdown_timeout", 20.0),
    "TURNOUT_GRPC_PORT": ("8001", "grpc_port", 8001),
    "TURNOUT_ADMIN_HOST": ("0.0.0.0", "admin_host", "0.0.0.0"),
    "TURNOUT_ADMIN_PORT": ("9091", "admin_port", 9091),
}


def test_every_serve_option_a_container_sets_comes_from_its_environment_variable(
    monkeypatch,
) -> None:
    for variable, (value, _, _) in SERVE_ENV.items():
        monkeypatch.setenv(variable, value)
    args = build_parser().parse_args(["serve"])
    for variable, (_, name, parsed) in SERVE_ENV.items():
        assert getattr(args, name) == parsed, variable
    # A flag on the command line still wins.
    assert build_parser().parse_args(["serve", "--port", "7000"]).port == 7000
    # Every variable turnout serve reads is here, or is the token or a yes/no flag.
    flags = {"TURNOUT_ALLOW_REMOTE", "TURNOUT_ALLOW_PICKLE"}
    assert set(SERVE_ENVIRONMENT) == {*SERVE_ENV, "TURNOUT_ADMIN_TOKEN", *flags}


def test_serve_help_names_every_environment_variable(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for variable, option in SERVE_ENVIRONMENT.items():
        assert f"${variable}" in out, f"{option}'s variable {variable} is not in --help"


@pytest.mark.parametrize(("value", "allowed"), [("1", True), ("yes", True), ("0", False)])
def test_turnout_allow_remote_is_a_yes_or_no(value: str, allowed: bool, monkeypatch) -> None:
    monkeypatch.setenv("TURNOUT_ALLOW_REMOTE", value)
    monkeypatch.delenv("TURNOUT_ADMIN_TOKEN", raising=False)
    assert env_flag("TURNOUT_ALLOW_REMOTE") is allowed


def test_a_misspelt_turnout_allow_remote_is_refused(capsys, monkeypatch) -> None:
    monkeypatch.setenv("TURNOUT_ALLOW_REMOTE", "ture")
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--host", "0.0.0.0"])
    assert exit_info.value.code == 2
    assert "TURNOUT_ALLOW_REMOTE must be" in capsys.readouterr().err
