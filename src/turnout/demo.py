"""The built-in demo: two versions of a model trained on a bundled dataset, served side by side."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from turnout.core.service.server import ModelServer

__all__ = ["DEMO_MODEL", "HeldOut", "deploy_demo_models", "run_demo"]

DEMO_MODEL = "breast_cancer"


@dataclass(frozen=True)
class HeldOut:
    """The demo's held-out test data: rows keyed by feature name, and their true labels."""

    rows: list[dict[str, float]]
    labels: np.ndarray[Any, Any]


def _train() -> tuple[Any, Any, list[str], HeldOut]:
    """Train two classifiers on scikit-learn's breast cancer data; return them and test data."""
    # NumPy arrays, not as_frame=True: that needs pandas, which serving does not.
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    features = [str(name) for name in data.feature_names]
    X_train, X_test, y_train, y_test = train_test_split(data.data, data.target, random_state=0)
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    candidate = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0)
    rows = [dict(zip(features, map(float, row), strict=True)) for row in X_test]
    return (
        baseline.fit(X_train, y_train),
        candidate.fit(X_train, y_train),
        features,
        HeldOut(rows, y_test),
    )


async def deploy_demo_models(server: ModelServer) -> HeldOut:
    """Deploy the demo's v1 (active) and v2; return the held-out rows and labels."""
    baseline, candidate, features, held_out = await asyncio.to_thread(_train)
    await server.deploy_model(
        DEMO_MODEL,
        "v1",
        baseline,
        features=features,
        metadata={"algorithm": "logistic regression"},
    )
    await server.deploy_model(
        DEMO_MODEL,
        "v2",
        candidate,
        features=features,
        set_active=False,
        metadata={"algorithm": "random forest"},
    )
    return held_out


async def run_demo() -> None:
    """Deploy two versions behind a 70/30 A/B split, send traffic, print predictions and status."""
    async with ModelServer(seed=0) as server:
        held_out = await deploy_demo_models(server)
        rows, y_test = held_out.rows, held_out.labels
        await server.setup_ab_test(DEMO_MODEL, ["v1", "v2"], [0.7, 0.3])
        print(f"Deployed {DEMO_MODEL} v1 and v2 behind a 70/30 weighted A/B split.\n")

        first = await server.infer(DEMO_MODEL, rows[:3])
        print(f"P(benign) for three held-out rows, served by {first.version}:")
        print(f"  {np.round(first.outputs, 3)}; labels {first.labels}, truth {y_test[:3]}\n")

        results = await asyncio.gather(*(server.infer(DEMO_MODEL, [row]) for row in rows * 4))
        for result, truth in zip(results, np.tile(y_test, 4), strict=True):
            assert result.labels is not None  # a classifier's answer always has labels
            await server.record_outcome(
                DEMO_MODEL, result.request_id, float(result.labels[0] == truth)
            )
        served = {v: sum(r.version == v for r in results) for v in ("v1", "v2")}
        print(f"{len(results)} concurrent single-row requests: {served}")
        comparison = server.compare_versions(DEMO_MODEL, "v1", "v2")
        print(
            f"Accuracy v1 {comparison.a.mean:.3f}, v2 {comparison.b.mean:.3f}: {comparison.verdict}"
        )

        print("\nStatus:")
        for version, info in server.get_all_models_status()[DEMO_MODEL].items():
            m = info["metrics"]
            print(
                f"  {version} ({info['metadata']['algorithm']}): {m.request_count} requests"
                f" in {m.batches} batches (mean batch {m.mean_batch_size:.1f} rows),"
                f" p50 {m.p50_latency_ms:.2f} ms, p99 {m.p99_latency_ms:.2f} ms,"
                f" error rate {m.error_rate:.1%}, breaker {info['circuit_breaker']['state']}"
            )
