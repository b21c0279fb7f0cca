"""Model files ``turnout serve --model`` deploys at start, as KServe runtimes serve /mnt/models."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import joblib  # type: ignore[import-untyped]
import numpy as np
import pytest

from support import read_banner, turnout_serve
from turnout import ModelServer
from turnout.commands.local_model import find_model_file
from turnout.commands.served_models import ServedModel, deploy_served_models, parse_served_model
from turnout.core.errors import ConversionError, InvalidNameError
from turnout.core.execution.convert import load_model
from turnout.core.state.locations import open_state


@pytest.fixture
def onnx_dir(tmp_path: Path, logistic_model: Any) -> Path:
    """A directory as KServe's storage initializer leaves it: one model.onnx."""
    directory = tmp_path / "mnt-models"
    directory.mkdir()
    onnx_bytes = load_model(logistic_model).onnx_bytes
    assert onnx_bytes is not None
    (directory / "model.onnx").write_bytes(onnx_bytes)
    return directory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("churn=/mnt/models", ServedModel("churn", Path("/mnt/models"))),
        ("churn:v2=model.onnx", ServedModel("churn", Path("model.onnx"), "v2")),
        ("churn=a=b.onnx", ServedModel("churn", Path("a=b.onnx"))),
    ],
)
def test_a_served_model_is_name_optional_version_and_path(text: str, expected: Any) -> None:
    assert parse_served_model(text) == expected


@pytest.mark.parametrize("text", ["churn", "=model.onnx", "churn=", "churn:=m.onnx", "../x=m.onnx"])
def test_a_malformed_served_model_is_refused(text: str) -> None:
    with pytest.raises(InvalidNameError):
        parse_served_model(text)


def test_the_one_onnx_file_of_a_directory_is_its_model(onnx_dir: Path) -> None:
    (onnx_dir / "model.joblib").write_bytes(b"not read")
    (onnx_dir / ".hidden.onnx").write_bytes(b"not read")
    (onnx_dir / "README").write_text("not a model")
    assert find_model_file(onnx_dir, allow_pickle=False) == onnx_dir / "model.onnx"


def test_a_directory_with_two_models_or_none_is_refused_naming_what_it_found(
    onnx_dir: Path,
) -> None:
    (onnx_dir / "other.onnx").write_bytes(b"")
    with pytest.raises(ConversionError, match=r"found model\.onnx, other\.onnx"):
        find_model_file(onnx_dir, allow_pickle=False)
    empty = onnx_dir / "empty"
    empty.mkdir()
    with pytest.raises(ConversionError, match="found none"):
        find_model_file(empty, allow_pickle=False)
    with pytest.raises(ConversionError, match="no model file or directory"):
        find_model_file(onnx_dir / "missing.onnx", allow_pickle=False)


def test_a_pickle_is_loaded_only_when_allowed(tmp_path: Path, logistic_model: Any) -> None:
    joblib.dump(logistic_model, tmp_path / "model.joblib")
    with pytest.raises(ConversionError, match="--allow-pickle"):
        find_model_file(tmp_path, allow_pickle=False)
    assert find_model_file(tmp_path, allow_pickle=True) == tmp_path / "model.joblib"


async def test_a_served_file_is_deployed_once_and_replaced_when_it_changes(
    server: ModelServer, onnx_dir: Path, forest_model: Any, binary_data: Any
) -> None:
    served = [ServedModel("cancer", onnx_dir)]
    await deploy_served_models(server, served)
    first = server.get_deployment("cancer", "1")
    await deploy_served_models(server, served)  # a restart that finds it restored
    assert server.get_deployment("cancer", "1") is first
    forest = load_model(forest_model).onnx_bytes
    assert forest is not None
    (onnx_dir / "model.onnx").write_bytes(forest)
    await deploy_served_models(server, served)
    assert server.get_deployment("cancer", "1").loaded.onnx_bytes == forest
    rows = binary_data.X_test.to_numpy()[:5]
    expected = forest_model.predict_proba(rows)[:, 1]  # a binary classifier's default output
    assert np.allclose(await server.predict("cancer", rows), expected, atol=1e-5)


async def test_a_second_server_sharing_the_state_loads_the_file_instead_of_deploying_it(
    tmp_path: Path, onnx_dir: Path
) -> None:
    location = f"sqlite:///{tmp_path / 'state.db'}"
    artifacts = tmp_path / "artifacts"
    first_state, second_state = open_state(location), open_state(location)
    assert first_state is not None
    assert second_state is not None
    served = [ServedModel("cancer", onnx_dir)]
    async with (
        ModelServer(state=first_state, artifacts=artifacts, entry_points=False) as first,
        ModelServer(state=second_state, artifacts=artifacts, entry_points=False) as second,
    ):
        await deploy_served_models(first, served)
        revision = (await first.control_state.read("cancer")).revision
        await deploy_served_models(second, served)
        assert (await second.control_state.read("cancer")).revision == revision
        assert (
            second.get_deployment("cancer", "1").loaded.onnx_bytes
            == (onnx_dir / "model.onnx").read_bytes()
        )
    await first_state.close()
    await second_state.close()


async def test_serve_model_answers_v1_and_v2_as_a_kserve_runtime(
    onnx_dir: Path, logistic_model: Any, binary_data: Any
) -> None:
    rows = binary_data.X_test.to_numpy()[:3]
    async with turnout_serve("--model", f"bc={onnx_dir}") as process:
        banner = await read_banner(process, "Model bc")
        assert "versions 1 (active)" in banner[-1]
        url = banner[0].split()[4]
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{url}/v1/models/bc:predict", json={"instances": rows.tolist()}
            ) as response:
                assert response.status == 200, await response.text()
                predictions = (await response.json())["predictions"]
                expected = logistic_model.predict_proba(rows)[:, 1]
                assert np.allclose(predictions, expected, atol=1e-5)
            async with session.get(f"{url}/v2/models/bc/versions/1/ready") as response:
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert await process.wait() == 0


async def test_serve_refuses_a_pickle_without_allow_pickle_before_it_listens(
    tmp_path: Path, logistic_model: Any
) -> None:
    joblib.dump(logistic_model, tmp_path / "model.joblib")
    async with turnout_serve("--model", f"bc={tmp_path}") as process:
        assert await process.wait() == 1
        assert process.stderr is not None
        errors = (await process.stderr.read()).decode()
    assert "is a pickle" in errors
    assert "--allow-pickle" in errors
    assert "Traceback" not in errors
