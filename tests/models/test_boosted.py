"""The boosted models' pieces that do not need a training run."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from models.boosted import ValueModel, compact_rounds, top_features
from models.encoding import FeatureEncoder


def fitted(curve: list[float], best: int) -> SimpleNamespace:
    """Stands in for a fitted XGBoost model: its validation curve and early-stopping round."""
    return SimpleNamespace(
        evals_result=lambda: {"validation_0": {"logloss": curve}}, best_iteration=best
    )


@pytest.mark.parametrize(
    ("tolerance", "rounds"),
    [(0.0, 5), (0.01, 4), (0.05, 3), (1.0, 1)],
)
def test_compact_rounds_keeps_the_fewest_trees_within_tolerance(tolerance, rounds):
    curve = [2.0, 1.2, 1.04, 1.005, 1.0, 1.001, 1.002]  # best 1.0 at round 5 (index 4)
    assert compact_rounds(fitted(curve, best=4), tolerance) == rounds


def test_compact_rounds_ignores_rounds_after_early_stopping():
    curve = [2.0, 1.0, 1.5, 0.5]  # the 0.5 came after the chosen best iteration
    assert compact_rounds(fitted(curve, best=1), 0.0) == 2


def test_encoder_one_hot_missing_and_float32_caps():
    enc = FeatureEncoder.from_dict(
        {"numeric": ["frequency", "income"], "categories": {"region": ["East", "West"]}}
    )
    frame = pd.DataFrame(
        {"frequency": [1.0, None, 1e308], "income": [5, 6, 7], "region": ["West", None, "North"]}
    )
    X = enc.transform(frame)
    big = np.finfo("float32").max
    expected = np.array(
        [[1.0, 5, 0, 1], [np.nan, 6, 0, 0], [big, 7, 0, 0]],
        dtype="float32",
    )
    np.testing.assert_array_equal(X, expected)
    assert X.flags["C_CONTIGUOUS"] and X.dtype == np.float32


def test_top_features_keeps_positive_contributions_largest_first():
    contrib = np.array(
        [[0.5, -1.0, 2.0, 0.1], [-1.0, -2.0, -3.0, -4.0], [0.0, 3.0, 0.0, 1.0]], dtype="float32"
    )
    reasons = top_features(contrib, ["a", "b", "c", "d"], top=3)
    assert reasons.to_pylist() == [["c", "a", "d"], [], ["b", "d"]]


def test_churn_reasons_never_name_a_feature_the_customer_has_no_value_for():
    """Unknown ages churn more here, so the trees send them up: the risk shows it, the reasons
    do not cite "age" for a customer whose age is unknown (and still do for known old ones)."""
    from models.boosted import ChurnModel, matrix

    rng = np.random.default_rng(1)
    n = 4000
    age = np.where(rng.random(n) < 0.3, np.nan, rng.uniform(20, 80, n))
    recency = rng.uniform(0, 300, n)
    risk = np.where(np.isnan(age), 0.8, np.where(age > 60, 0.7, 0.2)) * (recency / 300 + 0.5)
    y = (rng.random(n) < np.clip(risk, 0, 1)).astype(int)
    X = np.column_stack([age, recency]).astype("float32")
    model = ChurnModel(n_estimators=50, offset_feature=None, n_jobs=1)
    model.fit(X[:3000], y[:3000], X[3000:], y[3000:], ["age", "recency_days"])
    proba, reasons = model.predict_with_reasons(X, matrix(X))
    reasons = reasons.to_pylist()
    unknown = np.isnan(age)
    assert proba[unknown].mean() > proba[~unknown & (age < 60)].mean() + 0.1
    assert not any("age" in reasons[i] for i in np.flatnonzero(unknown))
    assert any("age" in reasons[i] for i in np.flatnonzero(age > 60))


def test_value_model_starts_from_the_baseline_and_calibrates_the_held_out_total(tmp_path):
    rng = np.random.default_rng(0)
    n = 4000
    baseline = rng.gamma(2.0, 50.0, 2 * n)  # the BTYD expected value
    other = rng.random(2 * n)
    spend = np.where(rng.random(2 * n) < 0.4, 0.0, baseline * (0.5 + other) * 2.5)
    spend[n:] *= 1.3  # the later cutoff spends more: the level moved
    X = np.column_stack([baseline, other]).astype("float32")
    model = ValueModel(n_estimators=50, n_jobs=1).fit(
        X[:n], spend[:n], X[n:], spend[n:], ["btyd_expected_value", "other"]
    )
    assert model.offset_feature == "btyd_expected_value"
    assert model.scale_ == pytest.approx(1.3, rel=0.1)
    assert model.predict(X[n:]).sum() == pytest.approx(spend[n:].sum(), rel=1e-6)
    # Round trip through its files: the same predictions, offset and scale included.
    model.save(tmp_path)
    np.testing.assert_allclose(ValueModel.load(tmp_path).predict(X), model.predict(X), rtol=1e-6)
    # Without the baseline among its features it is a plain Tweedie model.
    plain = ValueModel(n_estimators=10, n_jobs=1).fit(
        X[:n, 1:], spend[:n], X[n:, 1:], spend[n:], ["other"]
    )
    assert plain.offset_feature is None and plain.predict(X[:5, 1:]).shape == (5,)
