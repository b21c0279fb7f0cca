"""``turnout serve`` with its admin API, and ``turnout deploy`` / ``turnout status`` against it."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import joblib
import numpy as np
import pytest

from support import read_banner, turnout_serve
from turnout.cli import main

TOKEN = "cli-test-token-0123456789"


@pytest.fixture(scope="module")
def iris_file(tmp_path_factory: pytest.TempPathFactory, iris_model: Any) -> Path:
    """The iris model saved with joblib, as a user would hand it to ``turnout deploy``."""
    path = tmp_path_factory.mktemp("models") / "iris.joblib"
    joblib.dump(iris_model, path)
    return path


async def turnout(*args: str, token: str | None = None) -> tuple[int, str, str]:
    """Run ``turnout *args`` as a subprocess; return its exit status, stdout and stderr."""
    env = {**os.environ, "TURNOUT_ADMIN_TOKEN": token or ""}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "turnout",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_deploy_and_status_drive_a_running_server(iris_file, iris_model, multiclass_data):
    env = {"TURNOUT_ADMIN_TOKEN": TOKEN}
    async with turnout_serve("--no-demo", "--admin-port", "0", env=env) as process:
        banner = await read_banner(process, "/admin/status")
        url = banner[0].split()[4]
        admin_line = banner[-1].strip()
        assert admin_line.startswith('curl -s -H "Authorization: Bearer $TURNOUT_ADMIN_TOKEN"')
        admin_url = admin_line.split()[-1].removesuffix("/admin/status")
        assert TOKEN not in "\n".join(banner)

        deploy = ("deploy", str(iris_file), "--model-id", "iris", "--version", "v1")
        code, out, err = await turnout(
            *deploy, "--server", admin_url, "--metadata", "team=a", token=TOKEN
        )
        assert code == 0, err
        assert out.strip() == "deployed iris v1 (active)"
        assert "reading iris.joblib ..." in err
        assert "uploading to" in err

        code, out, err = await turnout("status", "--server", admin_url, token=TOKEN)
        assert code == 0, err
        header, row = out.strip().splitlines()
        assert header.split()[:3] == ["MODEL", "VERSION", "ACTIVE"]
        assert row.split()[:4] == ["iris", "v1", "*", "active"]

        code, out, err = await turnout("status", "--server", admin_url, "--token", "x" * 20)
        assert code == 1
        assert "the admin token is wrong" in err

        X = multiclass_data.X_test.iloc[:3].to_numpy()
        async with aiohttp.ClientSession() as session:
            instances = X.tolist()
            async with session.post(
                f"{url}/v1/models/iris:predict", json={"instances": instances}
            ) as r:
                body = await r.json()
            async with session.get(f"{admin_url}/admin/status") as r:
                assert r.status == 401
        np.testing.assert_allclose(body["predictions"], iris_model.predict_proba(X), atol=1e-5)

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


async def test_without_a_token_the_admin_api_is_off_and_the_banner_says_how_to_turn_it_on():
    async with turnout_serve("--no-demo", env={"TURNOUT_ADMIN_TOKEN": ""}) as process:
        banner = await read_banner(process, "admin API is off")
        assert "TURNOUT_ADMIN_TOKEN" in banner[-1]
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0


def test_deploy_into_a_repository_then_status_reads_it(tmp_path, iris_file, capsys) -> None:
    repository = str(tmp_path / "repo")
    deploy = ["deploy", str(iris_file), "--model-id", "iris", "--repository", repository]
    assert main([*deploy, "--version", "v1"]) == 0
    assert main([*deploy, "--version", "v2", "--no-activate"]) == 0
    assert (tmp_path / "repo" / "iris" / "v2" / "model.onnx").is_file()
    capsys.readouterr()
    assert main(["status", "--repository", repository]) == 0
    rows = [line.split() for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert [row[:3] for row in rows] == [["iris", "v1", "*"], ["iris", "v2", "active"]]

    assert main([*deploy, "--version", "v1"]) == 1
    assert "already deployed" in capsys.readouterr().err


async def test_a_repository_a_server_uses_is_read_by_status_and_refused_to_deploy(
    tmp_path, iris_file
) -> None:
    repository = str(tmp_path / "repo")
    deploy = ("deploy", str(iris_file), "--model-id", "iris", "--repository", repository)
    code, _, err = await turnout(*deploy, "--version", "v1")
    assert code == 0, err
    serve = ("--no-demo", "--repository", repository)
    async with turnout_serve(*serve, env={"TURNOUT_ADMIN_TOKEN": ""}) as server:
        await read_banner(server, "admin API is off")
        code, _, err = await turnout(*deploy, "--version", "v2")
        assert code == 1
        assert f"in use by a running server (pid {server.pid})" in err
        assert "turnout deploy --server URL" in err
        assert "reading iris.joblib" not in err  # refused before converting anything
        code, out, err = await turnout("status", "--repository", repository)
        assert code == 0, err
        assert [row.split()[:3] for row in out.strip().splitlines()[1:]] == [["iris", "v1", "*"]]
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 10) == 0
    assert not (tmp_path / "repo" / "iris" / "v2").exists()


def test_status_of_a_missing_repository_says_so(tmp_path, capsys) -> None:
    missing = tmp_path / "missing"
    assert main(["status", "--repository", str(missing)]) == 1
    assert f"the model repository {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()


def test_deploy_says_what_files_it_takes(tmp_path, capsys) -> None:
    model = tmp_path / "model.h5"
    model.write_bytes(b"\x89HDF")
    args = ["deploy", str(model), "--model-id", "m", "--version", "v1"]
    assert main([*args, "--repository", str(tmp_path / "repo")]) == 1
    assert (
        "expected a .onnx file, or a scikit-learn model saved with joblib"
        in capsys.readouterr().err
    )
    assert main([*args[:1], str(tmp_path / "missing.onnx"), *args[2:], "--repository", "r"]) == 1
    assert "no model file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--admin-token", "short"], "at least 16 characters"),
        (["--admin-without-token", "--admin-host", "0.0.0.0"], "configure a token"),
        (["--admin-port", "99999"], "port must be from 0 to 65535"),
    ],
)
def test_serve_checks_the_admin_flags(args, message, capsys, monkeypatch) -> None:
    monkeypatch.delenv("TURNOUT_ADMIN_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--no-demo", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_deploy_needs_a_server_or_a_repository(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["deploy", "m.onnx", "--model-id", "m", "--version", "v1"])
    assert "one of the arguments --server --repository is required" in capsys.readouterr().err


def test_deploy_refuses_names_that_are_not_one_url_segment(iris_file, capsys) -> None:
    for model, version in (("iris", "v#2"), ("a?b", "v1"), ("../x", "v1")):
        args = ["deploy", str(iris_file), "--model-id", model, "--version", version]
        assert main([*args, "--server", "http://127.0.0.1:9"]) == 1
        assert "unsafe characters" in capsys.readouterr().err


def test_deploy_says_when_the_server_is_unreachable(iris_file, capsys) -> None:
    args = ["deploy", str(iris_file), "--model-id", "iris", "--version", "v1"]
    assert main([*args, "--server", "http://127.0.0.1:9"]) == 1
    assert "cannot reach the admin API" in capsys.readouterr().err
