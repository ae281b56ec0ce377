"""The training job on small synthetic data: out-of-time metrics, the bundle, eligibility."""

import json

import numpy as np
import pandas as pd
import pytest

from features.customer import customer_features
from features.load import Inputs
from features.schema import DataError
from features.synthetic import generate
from features.validation import validate_customers, validate_transactions
from models.boosted import matrix
from models.bundle import OUTPUT_COLUMNS, Bundle, BundleError
from training.config import TrainConfig
from training.job import (
    check_eligibility,
    compare_with_champion,
    data_summary,
    suppress_small_personas,
    train,
)


def make_inputs(n=5000, seed=5, years=3.0):
    customers, tx, truth = generate(n, seed=seed, years=years)
    clean, as_of, report = validate_transactions(tx)
    cust, _ = validate_customers(customers)
    return Inputs(clean, as_of, cust, [report]), truth


@pytest.fixture(scope="module")
def trained():
    inputs, truth = make_inputs()
    return inputs, truth, train(inputs, TrainConfig())


def test_boosted_models_beat_the_btyd_baseline_out_of_time(trained):
    _, _, result = trained
    m = result.metrics
    assert m["churn_auc"] > m["baseline_churn_auc"]
    assert m["value_normalized_gini"] > m["baseline_value_normalized_gini"]
    assert m["churn_calibration_error"] < 0.05
    assert m["persona_count"] == 5 and m["persona_stability"] >= 0.95
    promote, reason, _ = compare_with_champion(result, None, TrainConfig())
    assert promote and reason == "no champion yet"


def test_churn_from_one_pass_of_contributions_matches_xgboost_prediction(trained):
    inputs, _, result = trained
    bundle = result.bundle
    feats = customer_features(inputs.transactions, inputs.as_of, inputs.customers).head(500)
    X = bundle.encoder.transform(bundle.model_inputs(feats))
    proba, reasons = bundle.churn.predict_with_reasons(X, matrix(X))
    np.testing.assert_allclose(proba, bundle.churn.predict_proba(X), atol=1e-4)
    assert len(reasons) == len(X) and set(reasons.flatten().to_pylist()) <= set(
        bundle.churn.feature_names_
    )


def test_bundle_round_trip_scores_identically(trained, tmp_path):
    inputs, _, result = trained
    feats = customer_features(inputs.transactions, inputs.as_of, inputs.customers).head(300)
    path = result.bundle.save(tmp_path / "bundle")
    assert not list(path.glob("*.pkl")) and not list(path.glob("*.pickle"))
    loaded = Bundle.load(path)
    expected = result.bundle.score(feats)
    got = loaded.score(feats)
    pd.testing.assert_frame_equal(expected, got)
    assert list(got.columns) == [*OUTPUT_COLUMNS, "model_version"]
    assert got["churn_probability"].between(0, 1).all()
    assert (got["predicted_value"] >= 0).all()
    assert got["value_percentile"].between(0, 100).all()
    assert set(got["risk_band"]) <= {"low", "medium", "high"}
    risky = got.loc[got["churn_probability"] > 0.6, "reasons"]
    assert risky.map(len).gt(0).all()


def test_corrupt_or_foreign_bundle_is_refused(trained, tmp_path):
    _, _, result = trained
    path = result.bundle.save(tmp_path / "bundle")
    with open(path / "value.ubj", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(BundleError, match="sha256 of value.ubj does not match"):
        Bundle.load(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema version 99"):
        Bundle.load(path)
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.load(tmp_path)


def test_data_summary_holds_no_personal_data(trained):
    inputs, _, _ = trained
    text = json.dumps(data_summary(inputs))
    assert inputs.transactions["customer_id"].iloc[0] not in text
    assert "transactions_sha256" in text


def test_too_short_history_is_refused_up_front():
    inputs, _ = make_inputs(n=300, years=1.5)
    with pytest.raises(DataError, match=r"need at least 910 days .* data spans"):
        check_eligibility(inputs, TrainConfig())
    check_eligibility(inputs, TrainConfig(value_horizon=120, min_customers=50))


def test_too_few_customers_is_refused():
    inputs, _ = make_inputs(n=60)
    with pytest.raises(DataError, match="need at least 200 customers"):
        check_eligibility(inputs, TrainConfig())


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="churn_horizon must be positive"):
        TrainConfig(churn_horizon=-5)


def test_training_examples_are_out_of_time(trained):
    """Evaluation labels come after every training label window: nothing random."""
    inputs, _, result = trained
    sets = result.eval_sets
    assert sets["earliest_eval_cutoff"] == inputs.as_of - pd.Timedelta(days=365)
    assert np.isfinite(result.metrics["value_spearman"])


def test_small_personas_show_only_their_size():
    catalog = pd.DataFrame(
        {
            "persona_id": [0, 1],
            "size": [400, 3],
            "share": [0.9925, 0.0075],
            "mean_age": [41.5, 67.0],
            "mean_income": [52000.0, 310000.0],
            "churn_rate": [0.2, 1.0],
        }
    )
    out = suppress_small_personas(catalog, min_size=50)
    assert out.loc[0].tolist() == [0, 400, 0.9925, 41.5, 52000.0, 0.2]
    assert out.loc[1, ["persona_id", "size", "share"]].tolist() == [1, 3, 0.0075]
    assert out.loc[1, ["mean_age", "mean_income", "churn_rate"]].isna().all()
