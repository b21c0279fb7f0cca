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


# -- the python runtime: the estimator itself, given the same columns ----------------------


async def test_the_python_runtime_serves_string_columns_with_the_pipeline_itself(
    server, tabular_classifier, tabular_data
) -> None:
    await server.deploy_model("visits", "py", tabular_classifier, runtime="python")
    X = tabular_data.X_test

    got = await server.predict("visits", X.to_dict("records"))

    np.testing.assert_allclose(got, tabular_classifier.predict_proba(X)[:, 1], rtol=1e-12)
    signature = server.get_deployment("visits").loaded.signature
    assert {c.name: c.categories for c in signature.columns if c.is_string} == {
        "sex": frozenset({"female", "male"}),
        "bmi_band": frozenset({"normal", "over", "obese"}),
    }


async def test_the_python_runtime_refuses_an_unknown_category_before_the_model_runs(
    server, tabular_classifier, tabular_data
) -> None:
    await server.deploy_model("visits", "py", tabular_classifier, runtime="python")
    rows = tabular_data.records(2)
    rows[1] = {**rows[1], "sex": "unheard-of"}

    with pytest.raises(InvalidInputError, match="row 1, feature 'sex': unknown category"):
        await server.predict("visits", rows)

    deployment = server.get_deployment("visits")
    assert deployment.metrics.requests == 0, "the refused request reached the model"
    assert deployment.breaker.state.value == "closed"


async def test_the_python_runtime_lets_an_ignoring_encoder_ignore(
    server, tabular_regressor, tabular_data
) -> None:
    await server.deploy_model("progression", "py", tabular_regressor, runtime="python")
    frame = tabular_data.X_test.iloc[:5].assign(bmi_band="unheard-of")

    got = await server.predict("progression", frame)

    np.testing.assert_allclose(got, tabular_regressor.predict(frame), rtol=1e-12)


# -- text columns: a vectorizer reads a column of free text ----------------------------------

_WORDS = [
    "late",
    "early",
    "broken",
    "great",
    "refund",
    "fast",
    "slow",
    "love",
    "hate",
    "box",
    "item",
    "service",
]


@pytest.fixture(scope="module")
def reviews() -> Any:
    """Short ASCII reviews and an order amount; the label is whether a review complains."""
    import pandas as pd

    rng = np.random.default_rng(7)
    notes = [" ".join(rng.choice(_WORDS, rng.integers(1, 6))) for _ in range(600)]
    frame = pd.DataFrame({"note": notes, "amount": rng.normal(50.0, 15.0, 600)})
    label = frame["note"].str.contains("broken|refund|hate|late").astype(int)
    return frame, label


def _text_pipeline(vectorizer: Any, reviews: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame, label = reviews
    encode = ColumnTransformer(
        [("text", vectorizer, "note"), ("numbers", StandardScaler(), ["amount"])]
    )
    return Pipeline([("encode", encode), ("model", LogisticRegression())]).fit(frame, label)


@pytest.mark.parametrize("kind", ["tfidf", "count"])
async def test_a_text_column_is_served_as_the_pipeline_reads_it(
    server: ModelServer, reviews: Any, kind: str
) -> None:
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    vectorizer = TfidfVectorizer() if kind == "tfidf" else CountVectorizer(ngram_range=(1, 2))
    pipeline = _text_pipeline(vectorizer, reviews)
    frame, _ = reviews
    await server.deploy_model("reviews", kind, pipeline)

    got = await server.predict("reviews", frame.to_dict("records"))

    np.testing.assert_allclose(got, pipeline.predict_proba(frame)[:, 1], atol=1e-5)
    (note, amount) = server.get_deployment("reviews").loaded.signature.columns
    assert (note.name, note.is_string, note.ascii_only) == ("note", True, True)
    assert (amount.name, amount.is_string) == ("amount", False)


async def test_text_beyond_ascii_is_refused_on_onnx_and_served_on_the_python_runtime(
    server: ModelServer, reviews: Any
) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    pipeline = _text_pipeline(TfidfVectorizer(), reviews)
    row = {"note": "Café déjà broken", "amount": 40.0}
    await server.deploy_model("reviews", "onnx", pipeline)
    await server.deploy_model("reviews", "py", pipeline, runtime="python", set_active=False)

    with pytest.raises(InvalidInputError, match="text beyond ASCII") as caught:
        await server.predict("reviews", [row], version="onnx")
    assert "runtime='python'" in str(caught.value)
    assert server.get_deployment("reviews", "onnx").breaker.state.value == "closed"

    import pandas as pd

    got = await server.predict("reviews", [row], version="py")
    np.testing.assert_allclose(got, pipeline.predict_proba(pd.DataFrame([row]))[:, 1])


async def test_the_stored_onnx_of_a_text_pipeline_keeps_its_rules(
    server: ModelServer, reviews: Any
) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    pipeline = _text_pipeline(TfidfVectorizer(), reviews)
    await server.deploy_model("reviews", "1", pipeline)
    onnx_bytes = server.get_deployment("reviews").loaded.onnx_bytes
    assert onnx_bytes is not None

    import onnx

    graph = onnx.load_model_from_string(onnx_bytes).graph
    (normalizer,) = [node for node in graph.node if node.op_type == "StringNormalizer"]
    locale = {a.name: a.s for a in normalizer.attribute}.get("locale")
    # The C locale exists on every machine; en_US.UTF-8, the default, is missing from many.
    assert locale == b"C"

    await server.deploy_model("reviews", "2", onnx_bytes)
    with pytest.raises(InvalidInputError, match="text beyond ASCII"):
        await server.predict("reviews", [{"note": "naïve", "amount": 1.0}], version="2")
