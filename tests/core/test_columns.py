"""Models that take string columns: a Pipeline one-hot encoding strings, deployed as it is.

Rows go in as dicts, lists or DataFrames with strings and numbers; each
column reaches its own graph input; unknown categories follow the
encoder's ``handle_unknown``; and a bad value is refused naming its row and
column before any model runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from turnout import ConversionError, InvalidInputError, ModelServer, ModelServingManager
from turnout.core.execution.columns import InputColumn, string_columns


async def test_string_columns_serve_what_the_pipeline_predicts(
    server, tabular_classifier, tabular_data
) -> None:
    await server.deploy_model("visits", "1", tabular_classifier)
    X = tabular_data.X_test
    expected = tabular_classifier.predict_proba(X)[:, 1]

    from_dicts = await server.predict("visits", X.to_dict("records"))
    from_frame = await server.predict("visits", X)
    from_lists = await server.predict("visits", X.to_numpy(dtype=object).tolist())

    for got in (from_dicts, from_frame, from_lists):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    signature = server.get_deployment("visits").loaded.signature
    assert [c.name for c in signature.columns] == tabular_data.features
    assert {c.name for c in signature.columns if c.is_string} == {"sex", "bmi_band"}


async def test_a_thousand_rows_match_within_1e_5(server, tabular_regressor, tabular_data) -> None:
    frame = tabular_data.X_train.sample(1000, replace=True, random_state=1)
    await server.deploy_model("progression", "1", tabular_regressor)

    got = await server.predict("progression", frame)

    np.testing.assert_allclose(got, tabular_regressor.predict(frame), rtol=1e-5, atol=1e-3)


async def test_requests_of_string_columns_are_batched_together(
    server, tabular_classifier, tabular_data
) -> None:
    import asyncio

    await server.deploy_model("visits", "1", tabular_classifier)
    rows = tabular_data.records(40)

    answers = await asyncio.gather(*(server.predict("visits", [row]) for row in rows))

    expected = tabular_classifier.predict_proba(tabular_data.X_test.iloc[:40])[:, 1]
    np.testing.assert_allclose(np.concatenate(answers), expected, atol=1e-5)
    metrics = server.get_deployment("visits").metrics
    assert metrics.batches < len(rows), "concurrent rows should share batches"


async def test_an_unknown_category_is_refused_when_the_encoder_refuses_it(
    server, tabular_classifier, tabular_data
) -> None:
    await server.deploy_model("visits", "1", tabular_classifier)
    rows = tabular_data.records(3)
    rows[2] = {**rows[2], "bmi_band": "unheard-of"}

    with pytest.raises(InvalidInputError) as caught:
        await server.predict("visits", rows)

    assert str(caught.value) == (
        "row 2, feature 'bmi_band': unknown category 'unheard-of'; the model takes"
        " 'normal', 'obese', 'over'"
    )
    assert caught.value.field == "bmi_band"
    assert server.get_deployment("visits").breaker.state.value == "closed"


async def test_an_unknown_category_counts_for_nothing_when_the_encoder_ignores_it(
    server, tabular_regressor, tabular_data
) -> None:
    await server.deploy_model("progression", "1", tabular_regressor)
    frame = tabular_data.X_test.iloc[:5].assign(bmi_band="unheard-of")

    got = await server.predict("progression", frame)

    # scikit-learn itself reads the unknown category as all zeros here.
    np.testing.assert_allclose(got, tabular_regressor.predict(frame), rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sex": 1}, "row 1, feature 'sex': expected a string, got int 1"),
        ({"sex": None}, "row 1, feature 'sex': expected a string, got NoneType None"),
        ({"age": "59"}, "row 1, feature 'age': expected a number, got str '59'"),
        ({"bp": None}, "row 1, feature 'bp': expected a number, got NoneType None"),
        ({"s1": float("nan")}, "row 1, feature 's1': nan is not allowed"),
    ],
)
async def test_a_value_of_the_wrong_type_is_refused_naming_row_and_column(
    server, tabular_classifier, tabular_data, change, message
) -> None:
    await server.deploy_model("visits", "1", tabular_classifier)
    rows = tabular_data.records(2)
    rows[1] = {**rows[1], **change}

    with pytest.raises(InvalidInputError) as caught:
        await server.predict("visits", rows)

    assert str(caught.value).startswith(message), str(caught.value)
    assert caught.value.field == next(iter(change))


async def test_missing_and_unknown_columns_are_refused(
    server, tabular_classifier, tabular_data
) -> None:
    await server.deploy_model("visits", "1", tabular_classifier)
    row = tabular_data.records(1)[0]

    with pytest.raises(InvalidInputError, match="row 0: missing feature 'sex'"):
        await server.predict("visits", [{k: v for k, v in row.items() if k != "sex"}])
    with pytest.raises(InvalidInputError, match="missing feature 'bmi_band'"):
        await server.predict("visits", tabular_data.X_test.drop(columns=["bmi_band"]))
    with pytest.raises(InvalidInputError, match="row 0: expected 10 values, got 9"):
        await server.predict("visits", [list(row.values())[:-1]])
    with pytest.raises(InvalidInputError, match="inputs are empty"):
        await server.predict("visits", [])


async def test_the_onnx_of_a_string_pipeline_redeploys_with_its_rules(
    server, tabular_classifier, tabular_data
) -> None:
    # Other workers, and a restart, deploy the stored ONNX bytes, not the estimator:
    # the columns and their categories come back from the graph itself.
    await server.deploy_model("visits", "1", tabular_classifier)
    onnx_bytes = server.get_deployment("visits").loaded.onnx_bytes
    await server.deploy_model("visits", "2", onnx_bytes)

    one = server.get_deployment("visits", "1").loaded.signature.columns
    two = server.get_deployment("visits", "2").loaded.signature.columns
    assert one == two
    rows = tabular_data.records(1)
    rows[0]["sex"] = "other"
    with pytest.raises(InvalidInputError, match="unknown category 'other'"):
        await server.predict("visits", rows, version="2")


async def test_a_repository_restores_a_string_pipeline(
    tmp_path: Path, tabular_classifier, tabular_data
) -> None:
    async with ModelServer(repository=tmp_path) as first:
        await first.deploy_model("visits", "1", tabular_classifier)
        expected = await first.predict("visits", tabular_data.X_test)

    async with ModelServer(repository=tmp_path) as second:
        got = await second.predict("visits", tabular_data.records())
        columns = second.get_deployment("visits").loaded.signature.columns

    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert {c.name: c.categories for c in columns if c.is_string} == {
        "sex": frozenset({"female", "male"}),
        "bmi_band": frozenset({"normal", "over", "obese"}),
    }


async def test_features_given_at_deploy_reorder_the_columns(
    server, tabular_classifier, tabular_data
) -> None:
    onnx_bytes = (await _deployed(server, tabular_classifier)).loaded.onnx_bytes
    order = sorted(tabular_data.features)
    await server.deploy_model("sorted", "1", onnx_bytes, features=order)

    got = await server.predict("sorted", tabular_data.X_test[order].to_numpy(dtype=object))

    expected = tabular_classifier.predict_proba(tabular_data.X_test)[:, 1]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(ConversionError, match="are not the model's inputs"):
        await server.deploy_model("wrong", "1", onnx_bytes, features=[*order[:-1], "x"])


def test_the_sync_manager_takes_string_rows(tabular_classifier, tabular_data) -> None:
    with ModelServingManager() as manager:
        manager.deploy_model("visits", "1", tabular_classifier)
        got = manager.predict("visits", tabular_data.records(4))

    expected = tabular_classifier.predict_proba(tabular_data.X_test.iloc[:4])[:, 1]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_string_columns_are_found_in_the_fitted_pipeline(tabular_classifier) -> None:
    features = list(tabular_classifier.feature_names_in_)

    found = string_columns(tabular_classifier, len(features))

    assert sorted(features[j] for j in found) == ["bmi_band", "sex"]


def test_a_string_pipeline_fitted_without_column_names_is_refused(tabular_data) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from turnout.core.execution.convert import load_model

    strings = tabular_data.X_train[["sex", "bmi_band"]].to_numpy()
    model = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(
        strings, tabular_data.y_train > 140
    )

    with pytest.raises(ConversionError, match="reads string columns, which are sent by name"):
        load_model(model)
    assert load_model(model, features=["sex", "band"]).signature.columns is not None


def test_a_column_checks_what_it_is_given() -> None:
    with pytest.raises(Exception, match="only string columns have categories"):
        InputColumn("age", np.dtype(np.float32), frozenset({"a"}))
    with pytest.raises(Exception, match="non-empty string"):
        InputColumn("", np.dtype(object))
    assert InputColumn("band", np.dtype(object), frozenset({"b", "a"})).example() == "a"


async def _deployed(server: ModelServer, model: Any) -> Any:
    await server.deploy_model("visits", "1", model)
    return server.get_deployment("visits")
