"""XGBoost and LightGBM models in skl2onnx: onnxmltools' converters, registered on first use.

skl2onnx converts only scikit-learn's own estimators; onnxmltools holds the
converters for these libraries. They are registered with skl2onnx the first
time a model holding such an estimator is converted, bare or inside a
Pipeline. xgboost, lightgbm and onnxmltools take seconds to import, so nothing
here imports them before that: a model is recognised by its class's module.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from turnout.core.errors import ConversionError

__all__ = ["BOOSTING_INSTALL_HINT", "prepare_boosters"]

BOOSTING_INSTALL_HINT = "pip install 'turnout[boosting]'"

# Top-level package -> the name users know it by.
_LIBRARIES = {"xgboost": "XGBoost", "lightgbm": "LightGBM"}

# Deploys convert in worker threads: two of them may meet an unregistered class at once.
_lock = threading.Lock()
_registered: set[type] = set()

_Converter = Callable[[Any, Any, Any], None]


def prepare_boosters(estimator: object) -> dict[str, int] | None:
    """Register converters for the boosters in ``estimator``; return the opsets to convert with.

    None when it holds no XGBoost or LightGBM estimator: it converts as
    scikit-learn's own do.
    """
    boosters = _boosters(estimator)
    if not boosters:
        return None
    with _lock:
        for booster_type, booster in boosters.items():
            if booster_type not in _registered:
                _register(booster_type, booster)
                _registered.add(booster_type)
    from skl2onnx import get_latest_tested_opset_version

    # onnxmltools' LightGBM converter emits the newest ai.onnx.ml that the main
    # opset allows, and skl2onnx refuses a model above ai.onnx.ml 3.
    return {"": get_latest_tested_opset_version(), "ai.onnx.ml": 3}


def _library(cls: type) -> str | None:
    """The boosting library ``cls`` or one of its bases comes from, or None."""
    for klass in cls.__mro__:
        package = klass.__module__.partition(".")[0]
        if package in _LIBRARIES:
            return package
    return None


def _boosters(estimator: object) -> dict[type, Any]:
    """The XGBoost and LightGBM estimators in ``estimator`` and its nested ones, by type."""
    parts = [estimator]
    get_params = getattr(estimator, "get_params", None)
    if callable(get_params):
        # deep=True reaches every nested estimator: a Pipeline's steps, and theirs.
        parts.extend(get_params(deep=True).values())
    return {type(part): part for part in parts if _library(type(part)) is not None}


def _register(booster_type: type, booster: Any) -> None:
    from sklearn.base import is_classifier, is_regressor

    library = _library(booster_type)
    assert library is not None  # only boosters are registered
    name = _LIBRARIES[library]
    classifier = is_classifier(booster)
    if not classifier and not is_regressor(booster):
        raise ConversionError(
            f"{booster_type.__name__} is neither a classifier nor a regressor: turnout"
            f" converts {name} classifiers and regressors"
        )
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    try:
        converter = _xgboost_converter() if library == "xgboost" else _lightgbm_converter()
    except ImportError as exc:
        raise ConversionError(
            f"converting {booster_type.__name__} ({name}) to ONNX needs onnxmltools"
            f" and {library}: {BOOSTING_INSTALL_HINT}"
        ) from exc
    if classifier:
        shapes = calculate_linear_classifier_output_shapes
        # What convert.py passes a classifier (zipmap=False) must be an option it knows.
        options = {"nocl": [True, False], "zipmap": [True, False, "columns"]}
    else:
        shapes, options = calculate_linear_regressor_output_shapes, None
    update_registered_converter(
        booster_type, f"{name}{booster_type.__qualname__}", shapes, converter, options=options
    )


def _lightgbm_converter() -> _Converter:
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm

    return convert_lightgbm  # type: ignore[no-any-return]


def _xgboost_converter() -> _Converter:
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost

    def convert(scope: Any, operator: Any, container: Any) -> None:
        # onnxmltools reads each split's feature from the booster's dump, which
        # uses the booster's feature names, and it understands only f0, f1, ...:
        # a model fitted on a DataFrame is converted from a copy without them.
        # A copy, because the caller's model may be predicting in another thread.
        model = operator.raw_operator
        if model.get_booster().feature_names is not None:
            model = copy.deepcopy(model)
            model.get_booster().feature_names = None
            operator.raw_operator = model
        convert_xgboost(scope, operator, container)

    return convert
