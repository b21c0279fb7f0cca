"""The example plugin package, installed for real: its entry point adds the ``attribute`` strategy.

The package is pip-installed (no dependencies, no build isolation) into a
temporary directory that is then put on ``sys.path``; a ``ModelServer()``
loads the ``turnout`` entry-point group by default and so finds it, with no
``plugins=`` argument.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from turnout import InvalidRoutingError, ModelServer, RoutingConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "turnout-attribute-routing"
MODULE = "turnout_attribute_routing"
BY_REGION = RoutingConfig(
    "attribute", {"attribute": "region", "routes": {"eu": "v2", "us": "v1"}, "default": "v1"}
)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the example package was pip-installed into."""
    # Built from a copy, so the build leaves no build/ or egg-info in the work tree.
    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("source") / EXAMPLE.name)
    target = tmp_path_factory.mktemp("site")
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-input",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pip.returncode == 0, f"pip install failed:\n{pip.stdout}\n{pip.stderr}"
    return target


@pytest.fixture
def plugin_on_path(installed: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Put the installed package on sys.path for one test; forget its modules afterwards."""
    assert MODULE not in sys.modules
    monkeypatch.syspath_prepend(str(installed))
    yield installed
    for name in [m for m in sys.modules if m == MODULE or m.startswith(f"{MODULE}.")]:
        del sys.modules[name]


@pytest.fixture
async def churn(plugin_on_path: Path, binary_model: Any, binary_model_v2: Any) -> Any:
    """A default ModelServer with churn:v1 (active) and churn:v2 deployed."""
    async with ModelServer() as server:
        await server.deploy_model("churn", "v1", binary_model)
        await server.deploy_model("churn", "v2", binary_model_v2)
        yield server


def test_the_package_installs_its_entry_point(installed):
    (dist_info,) = installed.glob("turnout_attribute_routing-*.dist-info")
    entry_points = (dist_info / "entry_points.txt").read_text()

    assert "[turnout]" in entry_points
    assert f"attribute_routing = {MODULE}" in entry_points


async def test_a_default_server_loads_the_plugin_from_its_entry_point(churn):
    assert churn.plugin_manager.has_plugin("attribute_routing")

    await churn.set_routing("churn", BY_REGION)

    assert churn.get_routing("churn") == BY_REGION


async def test_each_request_goes_to_the_version_its_attribute_names(
    churn, binary_model, binary_model_v2, binary_data
):
    rows = binary_data.X_test.iloc[:5]
    await churn.set_routing("churn", BY_REGION)

    eu = await churn.predict("churn", rows, attributes={"region": "eu"})
    us = await churn.predict("churn", rows, attributes={"region": "us"})

    # v2 (strongly regularised) and v1 give clearly different probabilities; ONNX
    # Runtime computes in float32, scikit-learn in float64.
    np.testing.assert_allclose(eu, binary_model_v2.predict_proba(rows)[:, 1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(us, binary_model.predict_proba(rows)[:, 1], rtol=1e-4, atol=1e-5)
    assert not np.allclose(eu, us, atol=1e-3)
    for region, version in [("eu", "v2"), ("us", "v1"), ("apac", "v1")]:
        result = await churn.infer("churn", rows, attributes={"region": region})
        assert result.version == version
    assert (await churn.infer("churn", rows)).version == "v1"  # no attributes: the default


async def test_the_plugin_refuses_routes_to_undeployed_versions(churn):
    bad = RoutingConfig("attribute", {"attribute": "region", "routes": {"eu": "v9"}})

    with pytest.raises(InvalidRoutingError, match="v9"):
        await churn.set_routing("churn", bad)
    assert churn.get_routing("churn") == RoutingConfig("active")


async def test_without_the_package_on_the_path_the_strategy_is_unknown(installed, binary_model):
    assert str(installed) not in sys.path
    async with ModelServer() as server:
        await server.deploy_model("churn", "v1", binary_model)

        with pytest.raises(InvalidRoutingError, match="unknown routing strategy 'attribute'"):
            await server.set_routing("churn", BY_REGION)
