import numpy as np
import pytest

from training.evaluate import (
    calibration_error,
    churn_metrics,
    normalized_gini,
    top_decile_lift,
    value_metrics,
)


def test_normalized_gini_exact_cases():
    actual = np.array([0.0, 0.0, 10.0, 30.0])
    assert normalized_gini(actual, actual) == pytest.approx(1.0)
    assert normalized_gini(actual, -actual) < 0
    assert normalized_gini(actual, [1, 2, 3, 4]) == pytest.approx(1.0)  # same ranking


def test_top_decile_lift_and_calibration():
    y = np.r_[np.ones(10), np.zeros(90)]
    score = np.r_[np.ones(10), np.zeros(90)]
    assert top_decile_lift(y, score) == pytest.approx(10.0)
    assert calibration_error(y, score) == pytest.approx(0.0)
    assert calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.4)


def test_metric_dicts():
    rng = np.random.default_rng(0)
    y = rng.random(1000) < 0.3
    good = churn_metrics(y, np.where(y, 0.8, 0.2))
    assert good["auc"] == 1.0 and good["top_decile_lift"] == pytest.approx(1 / y.mean(), rel=1e-9)
    v = value_metrics([0, 10, 20], [0, 10, 20])
    assert v["mae"] == 0 and v["aggregate_bias"] == 0 and v["normalized_gini"] == pytest.approx(1)
