"""Fixtures for the serving guide's tests (test_manager*.py): synthetic NBA games.

The guide predicts NBA games from four features; these games have those
features, one decimal each, as in the guide. Module-scoped: each module that
asks gets its own copy. test_manager_routing.py defines a ``games`` of its
own, which takes precedence there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def games() -> pd.DataFrame:
    """600 synthetic games: points per game and defensive ratings of both teams."""
    rng = np.random.default_rng(2025)
    n = 600
    return pd.DataFrame(
        {
            "home_ppg": rng.normal(112, 5, n),
            "away_ppg": rng.normal(110, 5, n),
            "home_def_rating": rng.normal(110, 4, n),
            "away_def_rating": rng.normal(110, 4, n),
        }
    ).round(1)


@pytest.fixture(scope="module")
def home_wins(games: pd.DataFrame) -> np.ndarray[Any, Any]:
    """1 where the home team won: the teams' edge plus home advantage and noise."""
    edge = games.home_ppg - games.away_ppg + games.away_def_rating - games.home_def_rating
    noise = np.random.default_rng(7).normal(0, 6, len(games))
    return (edge + 3 + noise > 0).astype(int).to_numpy()
