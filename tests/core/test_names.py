"""Model ids and version names end up in URLs and file names, so only safe ones are accepted."""

from __future__ import annotations

from typing import Any

import pytest

from turnout import InvalidNameError, ModelServer
from turnout.core.names import MAX_NAME_LENGTH, check_name

GOOD_NAMES = ["fraud", "fraud-detector_2", "v1.2.0", "2024-06-01", "A", "x" * MAX_NAME_LENGTH]

BAD_NAMES = [
    pytest.param("", "must not be empty", id="empty"),
    pytest.param("x" * (MAX_NAME_LENGTH + 1), "129 characters long; the limit is 128", id="long"),
    pytest.param("../x", "unsafe characters", id="parent-dir"),
    pytest.param("a/b", "unsafe characters", id="slash"),
    pytest.param("a\\b", "unsafe characters", id="backslash"),
    pytest.param("a b", "unsafe characters", id="space"),
    pytest.param(".hidden", "unsafe characters", id="leading-dot"),
    pytest.param("-flag", "unsafe characters", id="leading-dash"),
    pytest.param("a?b=c", "unsafe characters", id="query"),
    pytest.param("modèle", "unsafe characters", id="non-ascii"),
    pytest.param("v1\n", "unsafe characters", id="newline"),
    pytest.param(None, "must be a string, got NoneType", id="none"),
    pytest.param(1, "must be a string, got int", id="int"),
    pytest.param(b"v1", "must be a string, got bytes", id="bytes"),
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_safe_names_are_returned_unchanged(name: str) -> None:
    assert check_name("model_id", name) == name


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
def test_check_name_rejects(name: Any, message: str) -> None:
    with pytest.raises(InvalidNameError, match=f"^version .*{message}"):
        check_name("version", name)


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
async def test_deploy_rejects_a_bad_model_id(
    server: ModelServer, binary_model: Any, name: Any, message: str
) -> None:
    with pytest.raises(InvalidNameError, match=f"model_id.*{message}"):
        await server.deploy_model(name, "v1", binary_model)
    assert server.get_all_models_status() == {}


@pytest.mark.parametrize(("name", "message"), BAD_NAMES)
async def test_deploy_rejects_a_bad_version(
    server: ModelServer, binary_model: Any, name: Any, message: str
) -> None:
    with pytest.raises(InvalidNameError, match=f"version.*{message}"):
        await server.deploy_model("cancer", name, binary_model)
    assert server.get_all_models_status() == {}


async def test_deploy_accepts_safe_names(server: ModelServer, binary_model: Any) -> None:
    await server.deploy_model("fraud-detector_2", "v1.2.0", binary_model)
    assert server.active_models == {"fraud-detector_2": "v1.2.0"}


def test_invalid_name_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unsafe"):
        check_name("model_id", "a/b")
